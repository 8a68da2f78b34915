using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Threading.Tasks.Sources;

namespace SharedStore.Devices;

/// <summary>
/// The idiomatic async surface over <see cref="IDeviceAccessScheduler"/>: each call builds one request (one binding
/// per buffer) from a pool, schedules it and completes a <see cref="ValueTask"/> when every binding is notified.
/// </summary>
/// <remarks>Continuations run asynchronously on the .NET thread pool, never on the scheduler's own threads, so
/// awaiting code cannot stall the io_uring completion thread. Short writes are looped by the schedulers; a READ that
/// reaches end of device returns the short count. A cancelled token cancels the request (best effort: bindings the
/// kernel already finished still count) and the task then throws <see cref="OperationCanceledException"/>.</remarks>
[SupportedOSPlatform("linux")]
public static class DeviceAccess
{
    /// <summary>Reads up to <c>buffer.Length</c> bytes at <paramref name="offset"/>.</summary>
    /// <param name="scheduler">The scheduler that performs the transfer.</param>
    /// <param name="device">The device.</param>
    /// <param name="offset">Device byte offset.</param>
    /// <param name="buffer">Destination.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>Bytes read; fewer than requested only at end of device.</returns>
    /// <exception cref="DeviceException">The device reported an error (the task faults with it).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled first.</exception>
    /// <exception cref="ObjectDisposedException">The scheduler is disposed.</exception>
    public static ValueTask<int> ReadAsync(this IDeviceAccessScheduler scheduler, IRandomAccessDevice device, long offset,
        Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        AsyncTransfer? t = AsyncTransfer.Start(scheduler, device, RandomAccessOperation.Read, offset, 1,
            buffer, static (b, i) => b, cancellationToken, out Exception? error);
        return t is null ? FromError<int>(error, cancellationToken) : new ValueTask<int>(t, t.Version);
    }

    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>, looping short writes.</summary>
    /// <param name="scheduler">The scheduler that performs the transfer.</param>
    /// <param name="device">The device.</param>
    /// <param name="offset">Device byte offset.</param>
    /// <param name="buffer">Source.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>A task completing when every byte is written.</returns>
    /// <exception cref="DeviceException">The device reported an error.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled first.</exception>
    /// <exception cref="ObjectDisposedException">The scheduler is disposed.</exception>
    public static ValueTask WriteAsync(this IDeviceAccessScheduler scheduler, IRandomAccessDevice device, long offset,
        ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        AsyncTransfer? t = AsyncTransfer.Start(scheduler, device, RandomAccessOperation.Write, offset, 1,
            buffer, static (b, i) => MemoryMarshal.AsMemory(b), cancellationToken, out Exception? error);
        return t is null ? new ValueTask(FromError<int>(error, cancellationToken).AsTask()) : new ValueTask(t, t.Version);
    }

    /// <summary>Scatter read: fills <paramref name="buffers"/> in order from consecutive device bytes.</summary>
    /// <param name="scheduler">The scheduler that performs the transfer.</param>
    /// <param name="device">The device.</param>
    /// <param name="offset">Device byte offset of the first buffer.</param>
    /// <param name="buffers">Destinations, in device order.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>Bytes read up to the first short buffer (end of device).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="buffers"/> is null.</exception>
    /// <exception cref="DeviceException">The device reported an error for some buffer.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled first.</exception>
    /// <exception cref="ObjectDisposedException">The scheduler is disposed.</exception>
    public static ValueTask<long> ReadAsync(this IDeviceAccessScheduler scheduler, IRandomAccessDevice device, long offset,
        IReadOnlyList<Memory<byte>> buffers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(buffers);
        if (buffers.Count == 0)
        {
            return new ValueTask<long>(0L);
        }

        AsyncTransfer? t = AsyncTransfer.Start(scheduler, device, RandomAccessOperation.Read, offset, buffers.Count,
            buffers, static (b, i) => b[i], cancellationToken, out Exception? error);
        return t is null ? FromError<long>(error, cancellationToken) : new ValueTask<long>(t, t.Version);
    }

    /// <summary>Gather write: writes <paramref name="buffers"/> in order to consecutive device bytes.</summary>
    /// <param name="scheduler">The scheduler that performs the transfer.</param>
    /// <param name="device">The device.</param>
    /// <param name="offset">Device byte offset of the first buffer.</param>
    /// <param name="buffers">Sources, in device order.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>A task completing when every byte is written.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="buffers"/> is null.</exception>
    /// <exception cref="DeviceException">The device reported an error for some buffer.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled first.</exception>
    /// <exception cref="ObjectDisposedException">The scheduler is disposed.</exception>
    public static ValueTask WriteAsync(this IDeviceAccessScheduler scheduler, IRandomAccessDevice device, long offset,
        IReadOnlyList<ReadOnlyMemory<byte>> buffers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(buffers);
        if (buffers.Count == 0)
        {
            return default;
        }

        AsyncTransfer? t = AsyncTransfer.Start(scheduler, device, RandomAccessOperation.Write, offset, buffers.Count,
            buffers, static (b, i) => MemoryMarshal.AsMemory(b[i]), cancellationToken, out Exception? error);
        return t is null ? new ValueTask(FromError<int>(error, cancellationToken).AsTask()) : new ValueTask(t, t.Version);
    }

    private static ValueTask<T> FromError<T>(Exception? error, CancellationToken token) =>
        error is null ? ValueTask.FromCanceled<T>(token) : ValueTask.FromException<T>(error);
}

/// <summary>
/// One pooled async transfer: a reusable request, its bindings, and the value-task source. Lifetime: rented in
/// Start, completed when the last binding is notified, returned to the pool by GetResult (the awaiter's last touch).
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class AsyncTransfer : IValueTaskSource<int>, IValueTaskSource<long>, IValueTaskSource
{
    private const int PoolLimit = 256;
    private static readonly ConcurrentQueue<AsyncTransfer> s_pool = new();
    private static int s_pooled;

    private readonly List<Binding> _bindings = [];
    private ManualResetValueTaskSourceCore<long> _core;
    private RandomAccessRequest? _request;
    private IDeviceAccessScheduler? _scheduler;
    private CancellationToken _token;
    private CancellationTokenRegistration _registration;
    private int _pending;
    private int _scheduled;
    private int _cancelRequested;

    private AsyncTransfer()
    {
        // Continuations must not run on the scheduler's completion thread (it would stall every other transfer).
        _core.RunContinuationsAsynchronously = true;
    }

    public short Version => _core.Version;

    internal static AsyncTransfer? Start<TBuffers>(IDeviceAccessScheduler scheduler, IRandomAccessDevice device,
        RandomAccessOperation op, long offset, int count, TBuffers buffers, Func<TBuffers, int, Memory<byte>> get,
        CancellationToken token, out Exception? error)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        ArgumentNullException.ThrowIfNull(device);
        error = null;
        if (token.IsCancellationRequested)
        {
            return null;
        }

        if (!s_pool.TryDequeue(out AsyncTransfer? t))
        {
            t = new AsyncTransfer();
        }
        else
        {
            Interlocked.Decrement(ref s_pooled);
        }

        RandomAccessRequest request = t._request ??= new RandomAccessRequest(device, op, offset);
        request.Device = device;
        request.Operation = op;
        request.Offset = offset;
        request.Bindings.Clear();
        for (int i = 0; i < count; i++)
        {
            if (i == t._bindings.Count)
            {
                t._bindings.Add(new Binding(t));
            }

            Binding b = t._bindings[i];
            b.Reset(get(buffers, i));
            request.Bindings.Add(b);
        }

        t._scheduler = scheduler;
        t._token = token;
        t._pending = count;
        t._scheduled = 0;
        t._cancelRequested = 0;
        if (token.CanBeCanceled)
        {
            t._registration = token.UnsafeRegister(static s => ((AsyncTransfer)s!).OnCancel(), t);
        }

        try
        {
            scheduler.Schedule(request);
        }
        catch (Exception e)
        {
            t._registration.Dispose();
            t.Return();
            error = e;
            return null;
        }

        // Volatile: publishes "scheduled" to a racing OnCancel; whichever of the two runs second calls Cancel.
        Volatile.Write(ref t._scheduled, 1);
        if (Volatile.Read(ref t._cancelRequested) != 0)
        {
            scheduler.Cancel(request);
        }

        return t;
    }

    private void OnCancel()
    {
        // Volatile: pairs with the write of _scheduled in Start (no Cancel before Schedule, none lost after).
        Volatile.Write(ref _cancelRequested, 1);
        if (Volatile.Read(ref _scheduled) != 0)
        {
            _scheduler!.Cancel(_request!);
        }
    }

    private void OnBindingDone()
    {
        // Interlocked: bindings of one request complete on different worker threads.
        if (Interlocked.Decrement(ref _pending) != 0)
        {
            return;
        }

        // Dispose waits for a running OnCancel, so the request is not cancelled after it is reused.
        _registration.Dispose();
        _registration = default;
        RandomAccessRequest request = _request!;
        long total = 0;
        bool shortSeen = false;
        Exception? failure = null;
        bool cancelled = false;
        foreach (Binding b in _bindings.AsSpan(request.Bindings.Count))
        {
            TransferResult r = b.Result;
            if (r.Status == TransferStatus.Cancelled)
            {
                cancelled = true;
                continue;
            }

            if (!r.Succeeded)
            {
                failure ??= r.ToException(b);
                continue;
            }

            if (!shortSeen)
            {
                total += r.BytesTransferred;
                shortSeen = r.IsShort;
            }
        }

        if (failure != null)
        {
            _core.SetException(failure);
        }
        else if (cancelled)
        {
            _core.SetException(new OperationCanceledException(_token));
        }
        else
        {
            _core.SetResult(total);
        }
    }

    private void Return()
    {
        _core.Reset();
        _scheduler = null;
        _token = default;
        _request?.Bindings.Clear();
        if (Interlocked.Increment(ref s_pooled) <= PoolLimit)
        {
            s_pool.Enqueue(this);
        }
        else
        {
            Interlocked.Decrement(ref s_pooled);
        }
    }

    private long GetResultAndReturn(short token)
    {
        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            Return();
        }
    }

    int IValueTaskSource<int>.GetResult(short token) => (int)GetResultAndReturn(token);

    long IValueTaskSource<long>.GetResult(short token) => GetResultAndReturn(token);

    void IValueTaskSource.GetResult(short token) => GetResultAndReturn(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    private sealed class Binding(AsyncTransfer owner) : RandomAccessRequestBinding(Memory<byte>.Empty)
    {
        public TransferResult Result { get; private set; }

        protected internal override void OnTransferCompleted(TransferResult result)
        {
            Result = result;
            owner.OnBindingDone();
        }
    }
}

internal static class ListSpanExtensions
{
    internal static Span<T> AsSpan<T>(this List<T> list, int count) => CollectionsMarshal.AsSpan(list)[..count];
}
