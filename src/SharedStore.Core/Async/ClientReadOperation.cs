using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore;

/// <summary>
/// object_aread on the client path: read-locks the blocks (at once when uncontended, else on a pool thread that
/// waits with writer priority respected), then hands one request to this process's device scheduler on the object's
/// memory-region device; the binding's notification releases the locks and finishes the operation. One copy, from the
/// mapping into the caller's buffer, and no broker involvement.
/// </summary>
internal sealed unsafe class ClientReadOperation : ClientOperation
{
    private const int Queued = 0;
    private const int Started = 1;
    private const int CanceledPhase = 2;

    private static long s_nextId;
    private readonly SharedObject _obj;
    private readonly long _offset;
    private readonly Memory<byte> _buffer;
    private readonly long _firstBlock;
    private readonly long _lastBlock;
    private readonly CancellationTokenSource _cts = new();
    private int _phase;

    public ClientReadOperation(SharedObject obj, long offset, Memory<byte> buffer, long firstBlock, long lastBlock)
    {
        _obj = obj;
        _offset = offset;
        _buffer = buffer;
        _firstBlock = firstBlock;
        _lastBlock = lastBlock;
        Id = Interlocked.Increment(ref s_nextId);
    }

    public override long Id { get; }

    public void Start()
    {
        if (_buffer.Length == 0)
        {
            Finish(AsyncStatus.Completed, 0);
            return;
        }

        if (TryLockFast())
        {
            Schedule();
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(static s => s.LockSlowThenSchedule(), this, preferLocal: false);
    }

    public override bool Cancel()
    {
        if (Interlocked.CompareExchange(ref _phase, CanceledPhase, Queued) == Queued)
        {
            _cts.Cancel();
            Finish(AsyncStatus.Canceled, -(long)ErrorCode.Canceled);
            return true;
        }

        return Volatile.Read(ref _phase) == CanceledPhase;
    }

    private bool TryLockFast()
    {
        BlockLockRecord* locks = _obj.LockRecords;
        for (long b = _firstBlock; b <= _lastBlock; b++)
        {
            if (!BlockLock.TryAcquireReadFast(locks + b, _obj.Slot))
            {
                Unlock(b - 1);
                return false;
            }
        }

        return true;
    }

    private void LockSlowThenSchedule()
    {
        BlockLockRecord* locks = _obj.LockRecords;
        var wait = new LockWait(_obj.Connection.WaitPolicy, Timeout.InfiniteTimeSpan, _cts.Token, _obj);
        for (long b = _firstBlock; b <= _lastBlock; b++)
        {
            LockStatus s = BlockLock.AcquireRead(locks + b, _obj.Slot, ref wait);
            if (s != LockStatus.Acquired)
            {
                Unlock(b - 1);
                Finish(s == LockStatus.Canceled ? AsyncStatus.Canceled : AsyncStatus.Failed,
                    s == LockStatus.Canceled ? -(long)ErrorCode.Canceled : -(long)ErrorCode.BrokerUnavailable);
                return;
            }
        }

        Schedule();
    }

    private void Schedule()
    {
        if (Interlocked.CompareExchange(ref _phase, Started, Queued) != Queued)
        {
            Unlock(_lastBlock); // canceled while locking: it never read
            return;
        }

        try
        {
            var request = new RandomAccessRequest(_obj.ReadDevice, RandomAccessOperation.Read, _offset)
                .Add(new RandomAccessRequestBinding(_buffer, static (b, r) => ((ClientReadOperation)b.State!).Completed(r)) { State = this });
            _obj.Container.Client.DeviceScheduler.Schedule(request);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
        {
            Unlock(_lastBlock);
            Finish(AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
        }
    }

    private void Completed(TransferResult r)
    {
        Unlock(_lastBlock);
        if (r.Status == TransferStatus.Success)
        {
            Finish(AsyncStatus.Completed, r.BytesTransferred);
        }
        else
        {
            Finish(AsyncStatus.Failed, -(long)ErrorCode.Internal);
        }
    }

    private void Unlock(long through)
    {
        if (_obj.Container.IsClosed)
        {
            return; // the membership is gone and the broker released what it held
        }

        for (long b = _firstBlock; b <= through; b++)
        {
            BlockLock.ReleaseRead(_obj.LockRecords + b, _obj.Slot);
        }
    }
}
