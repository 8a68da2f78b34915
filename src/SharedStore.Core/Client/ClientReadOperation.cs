using SharedStore.Async;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore;

/// <summary>
/// object_aread on the client path: read-locks the blocks (at once when uncontended, else on a pool thread that
/// waits with writer priority respected), then hands one request to this process's device scheduler on the object's
/// memory-region device; the binding's notification releases the locks and finishes the operation. One copy, from the
/// mapping into the caller's buffer, and no broker involvement. The operation holds a reference on the object's view
/// (taken by the caller) from its start until its last use of the mapping, so leaving the object or the container
/// meanwhile cannot unmap the memory under the lock wait or the copy.
/// </summary>
internal sealed unsafe class ClientReadOperation : ClientOperation
{
    private const int Queued = 0;
    private const int Started = 1;
    private const int CanceledPhase = 2;

    private static long s_nextId;
    private readonly SharedObject _obj;
    private readonly ObjectView _view;
    private readonly long _offset;
    private readonly Memory<byte> _buffer;
    private readonly BlockRange _blocks;
    private readonly CancellationTokenSource _cts = new();
    private int _phase;

    /// <param name="obj">The object read.</param>
    /// <param name="view">Its view, with a reference (<see cref="ObjectView.TryAddRef"/>) that this operation
    /// releases when it no longer uses the mapping.</param>
    /// <param name="offset">Where the read starts in the object.</param>
    /// <param name="buffer">Where it goes.</param>
    public ClientReadOperation(SharedObject obj, ObjectView view, long offset, Memory<byte> buffer)
    {
        _obj = obj;
        _view = view;
        _offset = offset;
        _buffer = buffer;
        _blocks = view.Range(offset, buffer.Length);
        Id = Interlocked.Increment(ref s_nextId);
    }

    public override long Id { get; }

    public void Start()
    {
        if (_buffer.Length == 0)
        {
            _view.Release();
            Finish(AsyncStatus.Completed, 0);
            return;
        }

        if (_blocks.TryAcquireReadFast())
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

    private void LockSlowThenSchedule()
    {
        var wait = _view.Wait(_obj.Connection.WaitPolicy, Timeout.InfiniteTimeSpan, _cts.Token);
        LockStatus s = _blocks.AcquireRead(ref wait, out _);
        if (s != LockStatus.Acquired)
        {
            _view.Release(); // nothing held: the range released what it had taken
            Finish(s == LockStatus.Canceled ? AsyncStatus.Canceled : AsyncStatus.Failed,
                s == LockStatus.Canceled ? -(long)ErrorCode.Canceled : -(long)ErrorCode.BrokerUnavailable);
            return;
        }

        Schedule();
    }

    private void Schedule()
    {
        if (Interlocked.CompareExchange(ref _phase, Started, Queued) != Queued)
        {
            Unlock(); // canceled while locking: it never read
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
            Unlock();
            Finish(AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
        }
    }

    private void Completed(TransferResult r)
    {
        Unlock();
        if (r.Status == TransferStatus.Success)
        {
            Finish(AsyncStatus.Completed, r.BytesTransferred);
        }
        else
        {
            Finish(AsyncStatus.Failed, -(long)ErrorCode.Internal);
        }
    }

    /// <summary>Releases the read holds and then the view: the operation's last use of the mapping.</summary>
    private void Unlock()
    {
        if (!_obj.Container.IsClosed) // else the membership is gone and the broker released what it held
        {
            _blocks.ReleaseRead();
        }

        _view.Release();
    }
}
