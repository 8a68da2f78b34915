namespace SharedStore.Async;

/// <summary>An operation whose state lives in this process's managed memory, not in a channel status word: a client-path
/// aread, a broker-path read (finished by the completion thread), a submission refused because the ring or staging
/// was full, or a write its caller applied itself (born completed). <see cref="AsyncOperation"/> wraps either this or a ring operation.</summary>
internal abstract class ClientOperation
{
    private const int Running = 0;
    private const int DoneState = 1;
    private const int CanceledState = 2;
    private const int FailedState = 3;
    private int _state;
    private long _result;
    private TaskCompletionSource<long>? _tcs;
    private readonly object _gate = new();

    protected ClientOperation()
    {
    }

    /// <summary>An operation that is terminal from birth: nothing can observe it running, so no lock is needed.</summary>
    protected ClientOperation(AsyncStatus status, long result)
    {
        _result = result;
        _state = status switch
        {
            AsyncStatus.Completed => DoneState,
            AsyncStatus.Canceled => CanceledState,
            _ => FailedState,
        };
    }

    public AsyncStatus Status => Volatile.Read(ref _state) switch
    {
        Running => AsyncStatus.InProgress,
        DoneState => AsyncStatus.Completed,
        CanceledState => AsyncStatus.Canceled,
        _ => AsyncStatus.Failed,
    };

    public long ResultValue => Volatile.Read(ref _result);

    public abstract long Id { get; }

    /// <summary>Cancels unless the operation already started applying (subclass decides).</summary>
    public abstract bool Cancel();

    protected void Finish(AsyncStatus status, long result)
    {
        TaskCompletionSource<long>? tcs;
        lock (_gate)
        {
            if (_state != Running)
            {
                return;
            }

            _result = result;
            Volatile.Write(ref _state, status switch
            {
                AsyncStatus.Completed => DoneState,
                AsyncStatus.Canceled => CanceledState,
                _ => FailedState,
            });
            tcs = _tcs;
            Monitor.PulseAll(_gate);
        }

        if (tcs is not null)
        {
            Complete(tcs, status, result, Id);
        }
    }

    public bool Wait(TimeSpan timeout, CancellationToken token)
    {
        using var reg = token.CanBeCanceled ? token.UnsafeRegister(static s => { lock (s!) { Monitor.PulseAll(s); } }, _gate) : default;
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_gate)
        {
            while (_state == Running)
            {
                token.ThrowIfCancellationRequested();
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                {
                    return false;
                }

                Monitor.Wait(_gate, (int)Math.Min(left, 50));
            }

            return true;
        }
    }

    public ValueTask<long> Await(CancellationToken token)
    {
        TaskCompletionSource<long> tcs;
        lock (_gate)
        {
            if (_state != Running)
            {
                return AsyncOperation.Finished(Status, _result, Id, token);
            }

            tcs = _tcs ??= new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        if (token.CanBeCanceled)
        {
            token.UnsafeRegister(static s => ((ClientOperation)s!).Cancel(), this);
        }

        return new ValueTask<long>(tcs.Task);
    }

    internal static void Complete(TaskCompletionSource<long> tcs, AsyncStatus status, long result, long id)
    {
        switch (status)
        {
            case AsyncStatus.Completed: tcs.TrySetResult(result); break;
            case AsyncStatus.Canceled: tcs.TrySetException(new OperationCanceledException($"operation {id} was canceled")); break;
            default: tcs.TrySetException(new SharedStoreException((ErrorCode)(-result), $"operation {id} failed: {(ErrorCode)(-result)}")); break;
        }
    }
}

/// <summary>An operation refused at submission because the ring or staging was full (AsyncFullMode.Fail): Failed with
/// Busy from the start, nothing submitted.</summary>
internal sealed class RejectedOperation : ClientOperation
{
    public RejectedOperation()
        : base(AsyncStatus.Failed, -(long)ErrorCode.Busy)
    {
    }

    public override long Id => -1;

    public override bool Cancel() => false;
}

/// <summary>An asynchronous write that its caller applied itself, under the block write locks, before the call
/// returned (docs/ARCHITECTURE.md §9.5, "Direct writes"): Completed with its byte count from the start. opcancel
/// answers false (it was applied whole), opreturn the byte count, awaiting returns at once. Its id is negative and
/// unique in this process (ring operations have ids ≥ 0, the refused submission -1).</summary>
internal sealed class AppliedWriteOperation : ClientOperation
{
    private static long s_nextId = -1;

    public AppliedWriteOperation(long bytes)
        : base(AsyncStatus.Completed, bytes) => Id = Interlocked.Decrement(ref s_nextId);

    public override long Id { get; }

    public override bool Cancel() => false;
}
