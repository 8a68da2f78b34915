using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// The synchronous-I/O scheduler of the seed design: <see cref="Schedule"/> splits a request into one mini-request per
/// binding and queues them; a fixed pool of dedicated threads takes them in order, performs a blocking pread/pwrite
/// (retrying EINTR, looping short writes) and notifies the binding on that same thread.
/// </summary>
/// <remarks>
/// <para>For direct I/O its throughput is bounded by the thread count, one outstanding transfer per thread; see
/// docs/DEVICES.md for the measurements behind the factory's choice between this scheduler and io_uring.</para>
/// <para><b>Queue.</b> A lock-free <see cref="ConcurrentQueue{T}"/> plus a semaphore for idle workers. A first version
/// used one lock with Monitor wait/pulse; on this shared 2-CPU machine (load average 7 to 15 from neighbours) a
/// worker preempted while holding that lock stalled the others, which is what a lock-free queue avoids.</para>
/// <para><b>Wake protocol.</b> A worker that finds the queue empty increments <c>_idle</c> (full fence) and then
/// tries the queue once more before it waits; a producer enqueues (full fence) and then reads <c>_idle</c>, releasing
/// the semaphore when it is non-zero. Either the producer sees the idle worker, or the worker's re-check sees the
/// item, so no wake-up is lost. Surplus releases only cause a spurious wake-up.</para>
/// <para><b>Shutdown gate.</b> Producers that are not workers register in <c>_producers</c> before they read
/// <c>_shutdown</c>; Dispose sets <c>_shutdown</c> and waits for <c>_producers</c> to reach zero before it lets workers
/// exit, so nothing is queued behind the last worker. Workers drain the queue before exiting, which covers handlers
/// that schedule during shutdown (their bindings are reported as cancelled).</para>
/// </remarks>
[SupportedOSPlatform("linux")]
public sealed class ThreadPoolScheduler : IDeviceAccessScheduler
{
    private static readonly TimeSpan s_shutdownWait = TimeSpan.FromSeconds(30);

    [ThreadStatic]
    private static ThreadPoolScheduler? t_owner;

    private readonly ConcurrentQueue<RandomAccessRequestBinding> _queue = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread[] _threads;
    private int _idle;
    private int _producers;
    private int _shutdown;
    private volatile bool _exiting;
    private int _disposed;
    private int _inFlight;
    private int _faults;

    /// <summary>Starts <paramref name="threadCount"/> dedicated worker threads.</summary>
    /// <param name="threadCount">Worker threads; each performs one transfer at a time, so this is the deepest queue the
    /// device sees. 0 means twice the processor count (a starting point, not a measured optimum; the direct-I/O bench
    /// uses 8 on 2 CPUs).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threadCount"/> is not between 1 and 1024.</exception>
    public ThreadPoolScheduler(int threadCount = 0)
    {
        if (threadCount == 0)
        {
            threadCount = Environment.ProcessorCount * 2;
        }

        if (threadCount is < 1 or > 1024)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(threadCount), threadCount, "Between 1 and 1024 threads.");
        }

        ThreadCount = threadCount;
        SelectionReason = $"thread pool of {threadCount} threads (constructed directly)";
        _threads = new Thread[threadCount];
        for (int i = 0; i < threadCount; i++)
        {
            _threads[i] = new Thread(Worker)
            {
                IsBackground = true,
                Name = $"sharedstore-device-{i}",
            };
            _threads[i].UnsafeStart();
        }
    }

    /// <summary>Number of worker threads.</summary>
    public int ThreadCount { get; }

    /// <inheritdoc/>
    public DeviceSchedulerKind Kind => DeviceSchedulerKind.ThreadPool;

    /// <inheritdoc/>
    public string SelectionReason { get; internal set; }

    /// <inheritdoc/>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <inheritdoc/>
    public int NotificationFaults => Volatile.Read(ref _faults);

    /// <inheritdoc/>
    public void Schedule(RandomAccessRequest request)
    {
        RandomAccessDevice device = SchedulerCommon.CheckRequest(request);
        bool onWorker = t_owner == this;
        if (!onWorker)
        {
            // Interlocked (full fence) before reading _shutdown: pairs with Dispose's exchange-then-read of
            // _producers, so either Dispose waits for this producer or this producer sees the shutdown.
            Interlocked.Increment(ref _producers);
            if (Volatile.Read(ref _shutdown) != 0)
            {
                Interlocked.Decrement(ref _producers);
                DeviceThrowHelper.ThrowObjectDisposed(this);
            }
        }

        List<RandomAccessRequestBinding> bindings = request.Bindings;
        try
        {
            int count = SchedulerCommon.BeginBindings(this, request, device);
            Interlocked.Add(ref _inFlight, count);
            bool cancel = Volatile.Read(ref _shutdown) != 0;
            // A memory-region device's transfers are CPU copies: spreading one request's bindings over threads gains
            // nothing, so they travel as one chain (one queue operation per request, not per binding), worked in
            // order by one thread. File bindings are queued one by one so several threads overlap their I/O.
            bool chain = device is MemoryRegionDevice && !cancel;
            if (chain)
            {
                // Link the whole chain first, then publish its head: the enqueue is the release that makes every link
                // visible to the worker that dequeues it. Enqueuing the head before linking the rest let a running
                // worker reach a binding whose link was not written yet, read a stale null, and drop (never run, never
                // notify) the rest of the request: the broker's applier then waited for that group forever (issue 12;
                // ChainRaceTests pins it).
                for (int i = 0; i < bindings.Count; i++)
                {
                    bindings[i].NextInChain = i + 1 < bindings.Count ? bindings[i + 1] : null;
                }

                _queue.Enqueue(bindings[0]);
            }
            else
            {
                for (int i = 0; i < bindings.Count; i++)
                {
                    RandomAccessRequestBinding b = bindings[i];
                    if (cancel)
                    {
                        // A handler rescheduling during shutdown: accepted, but reported as cancelled.
                        b.TryRequestCancel();
                    }

                    _queue.Enqueue(b);
                }
            }
        }
        finally
        {
            if (!onWorker)
            {
                Interlocked.Decrement(ref _producers);
            }
        }

        // Full fence after the enqueues, then a plain read: see the wake protocol in the remarks. (A fence instead of
        // an interlocked read keeps every producer from writing _idle's cache line on every request.)
        Interlocked.MemoryBarrier();
        int idle = Volatile.Read(ref _idle);
        if (idle > 0)
        {
            _signal.Release(Math.Min(idle, bindings.Count));
        }
    }

    /// <inheritdoc/>
    /// <remarks>Queued bindings are cancelled; a binding whose pread/pwrite has started completes normally.
    /// Cancelled bindings are notified on a worker thread when it reaches them in the queue.</remarks>
    public void Cancel(RandomAccessRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        foreach (RandomAccessRequestBinding b in request.Bindings)
        {
            if (b.Request == request)
            {
                b.TryRequestCancel();
            }
        }
    }

    /// <inheritdoc/>
    public void RegisterDevice(IRandomAccessDevice device)
    {
        if (Volatile.Read(ref _shutdown) != 0)
        {
            DeviceThrowHelper.ThrowObjectDisposed(this);
        }

        SchedulerCommon.Register(this, device);
    }

    /// <inheritdoc/>
    public bool UnregisterDevice(IRandomAccessDevice device, TimeSpan timeout)
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A device cannot be unregistered from its scheduler's own notification thread (it would wait for itself).");
        }

        return SchedulerCommon.Unregister(this, device, timeout);
    }

    /// <summary>
    /// Stops the scheduler: queued bindings are notified as cancelled, running transfers finish and are notified,
    /// then the threads exit (bounded wait of 30 s). Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from a notification handler of this scheduler.</exception>
    public void Dispose()
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A scheduler cannot be disposed from its own notification thread.");
        }

        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Interlocked.Exchange(ref _shutdown, 1);
        var deadline = Stopwatch.StartNew();
        SpinWait spin = default;
        while (Volatile.Read(ref _producers) != 0 && deadline.Elapsed < s_shutdownWait)
        {
            spin.SpinOnce();
        }

        foreach (RandomAccessRequestBinding b in _queue)
        {
            b.TryRequestCancel();
        }

        _exiting = true;
        _signal.Release(_threads.Length);
        foreach (Thread t in _threads)
        {
            TimeSpan left = s_shutdownWait - deadline.Elapsed;
            t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A scheduler cannot be disposed from its own notification thread.");
        }

        // Joining threads blocks; do it off the caller's thread.
        return Volatile.Read(ref _disposed) != 0 ? default : new ValueTask(Task.Run(Dispose));
    }

    // AggressiveOptimization: entered once per thread and loops forever; see IoUringScheduler.ReaperLoop.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void Worker()
    {
        t_owner = this;
        while (true)
        {
            if (!_queue.TryDequeue(out RandomAccessRequestBinding? b))
            {
                // Interlocked (full fence) before the re-check: see the wake protocol in the remarks.
                Interlocked.Increment(ref _idle);
                if (_queue.TryDequeue(out b))
                {
                    Interlocked.Decrement(ref _idle);
                }
                else if (_exiting)
                {
                    Interlocked.Decrement(ref _idle);
                    return;
                }
                else
                {
                    _signal.Wait();
                    Interlocked.Decrement(ref _idle);
                    continue;
                }
            }

            while (b is not null)
            {
                // Read the link before notifying: the handler may reschedule (and relink) this binding.
                RandomAccessRequestBinding? next = b.NextInChain;
                b.NextInChain = null;
                if (next is not null && Volatile.Read(ref _shutdown) != 0)
                {
                    next.TryRequestCancel(); // shutting down: the rest of the chain counts as queued, so cancelled
                }

                TransferResult result;
                if (!b.TryStart())
                {
                    result = TransferResult.Fail(TransferStatus.Cancelled);
                }
                else if (b.PreStatus != TransferStatus.Success)
                {
                    result = TransferResult.Fail(b.PreStatus);
                }
                else
                {
                    RandomAccessRequest request = b.Request!;
                    var device = (RandomAccessDevice)request.Device;
                    result = device.IsDisposed
                        ? TransferResult.Fail(TransferStatus.DeviceClosed)
                        : device.Transfer(request.Operation, b.DeviceOffset, (byte*)b.Address, b.Length);
                }

                // Decrement before notifying: a handler that waits for InFlight to drop must see its own binding gone.
                Interlocked.Decrement(ref _inFlight);
                b.Complete(result, ref _faults);
                b = next;
            }
        }
    }
}

/// <summary>Request checks shared by the schedulers.</summary>
[SupportedOSPlatform("linux")]
internal static class SchedulerCommon
{
    internal static RandomAccessDevice CheckRequest(RandomAccessRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Device is not RandomAccessDevice device)
        {
            DeviceThrowHelper.ThrowArgument(nameof(request), "The request's device must derive from RandomAccessDevice.");
            return null;
        }

        if (request.Bindings.Count == 0)
        {
            DeviceThrowHelper.ThrowArgument(nameof(request), "The request has no bindings.");
        }

        return device;
    }

    /// <summary>Claims every binding (all or none) and validates each against the device, recording the status to
    /// report in <see cref="RandomAccessRequestBinding.PreStatus"/>. Returns the binding count.</summary>
    internal static int BeginBindings(IDeviceAccessScheduler scheduler, RandomAccessRequest request, RandomAccessDevice device)
    {
        List<RandomAccessRequestBinding> bindings = request.Bindings;
        DeviceRegistration? registration = device.FindRegistration(scheduler);
        if (registration is not null && !registration.TryAcquire(bindings.Count))
        {
            DeviceThrowHelper.ThrowInvalidOperation(
                $"Device {device.Name} is being unregistered from this scheduler; it takes no new requests there.");
        }

        long offset = request.Offset;
        for (int i = 0; i < bindings.Count; i++)
        {
            RandomAccessRequestBinding b = bindings[i];
            if (!b.TryBegin(request, offset))
            {
                // Roll back the ones already claimed so the request can be fixed and rescheduled.
                int ignored = 0;
                for (int j = 0; j < i; j++)
                {
                    bindings[j].Complete(default, ref ignored, notify: false);
                }

                registration?.Release(bindings.Count);
                DeviceThrowHelper.ThrowInvalidOperation($"Binding {i} of the request is already in flight.");
            }

            b.PreStatus = device.Validate(request.Operation, offset, b.Address, b.Length);
            offset += b.Length;
        }

        foreach (RandomAccessRequestBinding b in bindings)
        {
            b.Registration = registration;
        }

        return bindings.Count;
    }

    /// <summary>The shared body of <see cref="IDeviceAccessScheduler.RegisterDevice"/>.</summary>
    internal static void Register(IDeviceAccessScheduler scheduler, IRandomAccessDevice device)
    {
        RandomAccessDevice d = CheckDevice(device);
        if (d.IsDisposed)
        {
            DeviceThrowHelper.ThrowObjectDisposed(d);
        }

        if (d.AddRegistration(scheduler) is null)
        {
            DeviceThrowHelper.ThrowInvalidOperation($"Device {d.Name} is already registered with this scheduler.");
        }
    }

    /// <summary>The shared body of <see cref="IDeviceAccessScheduler.UnregisterDevice"/>.</summary>
    internal static bool Unregister(IDeviceAccessScheduler scheduler, IRandomAccessDevice device, TimeSpan timeout)
    {
        RandomAccessDevice d = CheckDevice(device);
        if (timeout < TimeSpan.Zero || timeout.TotalMilliseconds > int.MaxValue)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(timeout), timeout, "Between 0 and int.MaxValue milliseconds.");
        }

        DeviceRegistration? registration = d.FindRegistration(scheduler);
        if (registration is null)
        {
            DeviceThrowHelper.ThrowInvalidOperation($"Device {d.Name} is not registered with this scheduler.");
        }

        if (!registration.Drain(timeout))
        {
            return false;
        }

        d.RemoveRegistration(registration);
        return true;
    }

    private static RandomAccessDevice CheckDevice(IRandomAccessDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device is not RandomAccessDevice d)
        {
            DeviceThrowHelper.ThrowArgument(nameof(device), "The device must derive from RandomAccessDevice.");
            return null;
        }

        return d;
    }
}
