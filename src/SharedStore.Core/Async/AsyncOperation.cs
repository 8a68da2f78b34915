using System.Runtime.CompilerServices;
using SharedStore.Async;

namespace SharedStore;

/// <summary>The seed's <c>object_opstatus</c> values.</summary>
public enum AsyncStatus
{
    /// <summary>Done and succeeded (the seed's 0). <see cref="AsyncOperation.Result"/> is the byte count.</summary>
    Completed = 0,

    /// <summary>Submitted, not finished (the seed's INPROGRESS).</summary>
    InProgress = 1,

    /// <summary>Canceled before it was applied: nothing of it took effect (the seed's CANCELED).</summary>
    Canceled = 2,

    /// <summary>Finished with an error: <see cref="AsyncOperation.Error"/> says which. Nothing of it took effect.</summary>
    Failed = 3,
}

/// <summary>What a submission does when the ring (or the staging area) is full.</summary>
public enum AsyncFullMode
{
    /// <summary>Wait for space (up to <see cref="SharedStoreClientOptions.AsyncSubmitTimeout"/>). The default.</summary>
    Wait = 0,

    /// <summary>Return at once an operation that failed with <see cref="ErrorCode.Busy"/>; nothing was submitted.</summary>
    Fail = 1,
}

/// <summary>Where <see cref="SharedObject.ARead(long, Memory{byte})"/> copies (docs/ARCHITECTURE.md §9 has the
/// measurement).</summary>
public enum AsyncReadPath
{
    /// <summary>This process's own device scheduler reads its mapping into the buffer: one copy, no broker. The default.</summary>
    Client = 0,

    /// <summary>The broker copies into this client's staging area through the ring, and the client copies from there
    /// into the buffer on completion: two copies. Kept for the comparison.</summary>
    Broker = 1,
}

/// <summary>Who copies an <see cref="SharedObject.AWrite(long, ReadOnlySpan{byte})"/> larger than a ring slot's
/// inline bytes (84) into the object (docs/ARCHITECTURE.md §9.5, "Direct writes").</summary>
public enum AsyncWritePath
{
    /// <summary>The calling thread, under the blocks' write locks, with one copy, when every block is free and nothing
    /// this client submitted is still pending; the operation is then completed when the call returns. Otherwise the
    /// write is staged and the broker applies it. The default.</summary>
    Client = 0,

    /// <summary>Always staged: the call copies the payload into staging and the broker copies it into the object (two
    /// copies, the second on the broker's thread). For callers that want the call to return before the object is
    /// touched, and for tests of the staged path.</summary>
    Broker = 1,
}

/// <summary>
/// Handle of an asynchronous operation (the seed's operation id): <see cref="Status"/> is <c>object_opstatus</c>,
/// <see cref="Cancel"/> is <c>object_opcancel</c>, <see cref="Result"/> is <c>object_opreturn</c>. It is a value: copy
/// it freely. It is also awaitable; awaiting returns the byte count or throws (SharedStoreException for a failure,
/// OperationCanceledException for a cancel). Reading the status never talks to the broker: ring operations are read
/// from status words in shared memory.
/// </summary>
/// <remarks>The status of an asynchronous write stays readable until the ring has taken a full lap of later
/// submissions (16 384 by default); after that its entry belongs to a newer operation and the calls throw
/// InvalidOperationException rather than report another operation's status.</remarks>
public readonly struct AsyncOperation : IEquatable<AsyncOperation>
{
    private readonly object? _source; // AsyncChannel (a ring operation) or ClientOperation
    private readonly long _first;
    private readonly long _last;

    internal AsyncOperation(object source, long first, long last)
    {
        _source = source;
        _first = first;
        _last = last;
    }

    /// <summary>The operation id: for a staged write, the ring position of its (last) message; for a write its caller
    /// applied itself (born completed), a negative number unique in this process.</summary>
    public long Id => _last;

    /// <summary>Whether this is a default (never submitted) handle.</summary>
    public bool IsDefault => _source is null;

    /// <summary>object_opstatus: Completed (0), InProgress, Canceled or Failed. No broker round trip.</summary>
    /// <exception cref="InvalidOperationException">A default handle, or the status entry was reused (see remarks).</exception>
    public AsyncStatus Status => _source switch
    {
        AsyncChannel c => c.Status.StatusOf(_first, _last).Status,
        ClientOperation o => o.Status,
        _ => throw new InvalidOperationException("a default AsyncOperation names no operation"),
    };

    /// <summary>True once the operation finished (Completed, Canceled or Failed).</summary>
    public bool IsCompleted => Status != AsyncStatus.InProgress;

    /// <summary>object_opreturn: bytes transferred when Completed, else the negated error code
    /// (<c>-(long)ErrorCode.Canceled</c> when canceled).</summary>
    /// <exception cref="InvalidOperationException">Still in progress (the seed leaves this unspecified), a default
    /// handle, or a reused status entry.</exception>
    public long Result
    {
        get
        {
            var (status, result) = Outcome();
            if (status == AsyncStatus.InProgress)
            {
                throw new InvalidOperationException($"operation {Id} is still in progress");
            }

            return result;
        }
    }

    /// <summary>The error of a Failed operation (Canceled for a canceled one, Ok otherwise).</summary>
    public ErrorCode Error
    {
        get
        {
            var (status, result) = Outcome();
            return status switch
            {
                AsyncStatus.Failed => (ErrorCode)(-result),
                AsyncStatus.Canceled => ErrorCode.Canceled,
                _ => ErrorCode.Ok,
            };
        }
    }

    /// <summary>object_opcancel: true when the operation will never be applied (it was canceled now or before);
    /// false when it is already being applied or done, in which case it completes as a whole. Never applies half.</summary>
    public bool Cancel() => _source switch
    {
        AsyncChannel c => c.Status.Cancel(_first),
        ClientOperation o => o.Cancel(),
        _ => throw new InvalidOperationException("a default AsyncOperation names no operation"),
    };

    /// <summary>Blocks until the operation finished or the timeout passed; true when finished.</summary>
    /// <exception cref="OperationCanceledException">The token fired (the operation is not canceled by it).</exception>
    public bool Wait(TimeSpan timeout, CancellationToken cancellationToken = default) => _source switch
    {
        AsyncChannel c => c.Status.WaitFor(_first, _last, timeout, cancellationToken),
        ClientOperation o => o.Wait(timeout, cancellationToken),
        _ => throw new InvalidOperationException("a default AsyncOperation names no operation"),
    };

    /// <summary>A ValueTask that completes with the byte count, or throws SharedStoreException (failed) or
    /// OperationCanceledException (canceled). <paramref name="cancellationToken"/> maps to <see cref="Cancel"/>:
    /// when it fires the operation is canceled if it has not been applied yet, else it completes normally.</summary>
    public ValueTask<long> AsValueTask(CancellationToken cancellationToken = default)
    {
        var (status, result) = Outcome();
        if (status != AsyncStatus.InProgress)
        {
            return Finished(status, result, Id, cancellationToken);
        }

        return _source switch
        {
            AsyncChannel c => c.Completions.Await(_first, _last, cancellationToken),
            ClientOperation o => o.Await(cancellationToken),
            _ => throw new InvalidOperationException("a default AsyncOperation names no operation"),
        };
    }

    /// <summary>Makes the handle awaitable: <c>long bytes = await obj.AWrite(…)</c>.</summary>
    public ValueTaskAwaiter<long> GetAwaiter() => AsValueTask().GetAwaiter();

    internal static ValueTask<long> Finished(AsyncStatus status, long result, long id, CancellationToken token) => status switch
    {
        AsyncStatus.Completed => new ValueTask<long>(result),
        AsyncStatus.Canceled => ValueTask.FromException<long>(new OperationCanceledException($"operation {id} was canceled", token)),
        _ => ValueTask.FromException<long>(new SharedStoreException((ErrorCode)(-result), $"operation {id} failed: {(ErrorCode)(-result)}")),
    };

    private (AsyncStatus Status, long Result) Outcome() => _source switch
    {
        AsyncChannel c => c.Status.StatusOf(_first, _last),
        ClientOperation o => (o.Status, o.ResultValue),
        _ => throw new InvalidOperationException("a default AsyncOperation names no operation"),
    };

    /// <inheritdoc/>
    public bool Equals(AsyncOperation other) => ReferenceEquals(_source, other._source) && _first == other._first && _last == other._last;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is AsyncOperation o && Equals(o);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_source, _first, _last);

    /// <summary>Equality.</summary>
    public static bool operator ==(AsyncOperation left, AsyncOperation right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(AsyncOperation left, AsyncOperation right) => !left.Equals(right);

    /// <inheritdoc/>
    public override string ToString() => _source is null ? "AsyncOperation(default)" : $"AsyncOperation({Id})";
}
