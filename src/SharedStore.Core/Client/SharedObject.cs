using System.Numerics;
using System.Runtime.CompilerServices;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore;

/// <summary>The seed's <c>object_attr</c>: the object's size and where its data is mapped in this process.</summary>
/// <param name="Size">Bytes of object data.</param>
/// <param name="DataAddress">Address of byte 0 in this process. Valid until the object or container is left; read it
/// only under a lease (<see cref="SharedObject.Get(long, long, TimeSpan, CancellationToken)"/>).</param>
public readonly record struct ObjectAttributes(long Size, nint DataAddress);

/// <summary>
/// A joined object (the seed's object id). Get, put and write work directly on the mapped memory under the
/// object's block locks; none of them talks to the broker. Thread-safe, except that leave and destroy must not race
/// with other calls on the same handle. Disposing leaves the object (<c>object_leave</c>).
/// </summary>
public sealed unsafe partial class SharedObject : IDisposable, ILockRepairRequester
{
    private readonly Container _container;
    private readonly BrokerConnection _conn;
    private readonly ClientSegment _segment;
    private readonly byte* _data;
    private readonly BlockLockRecord* _locks;
    private readonly int _slot;
    private readonly int _blockShift;
    private readonly int[] _localWaiters;
    private readonly object _waitGate = new();
    private volatile bool _closed;
    private Devices.MemoryRegionDevice? _readDevice;
    private readonly bool _durable;

    internal SharedObject(Container container, ObjectInfo info, ClientSegment segment)
    {
        _container = container;
        _conn = container.Connection;
        _segment = segment;
        Id = info.ObjectId;
        Name = info.Name;
        Size = (long)info.Size;
        BlockCount = (int)info.BlockCount;
        _slot = container.Slot;
        _durable = container.IsDurable;
        _blockShift = BitOperations.Log2((uint)container.BlockSize);
        if ((long)info.DataOffset + Size > segment.Data.Length || (long)info.LockOffset + ((long)BlockCount * BlockLockDescriptor.Size) > segment.Locks.Length)
        {
            throw new SharedStoreException(ErrorCode.Internal, $"object '{Name}' lies outside its segment");
        }

        _data = segment.Data.Pointer + (long)info.DataOffset;
        _locks = (BlockLockRecord*)(segment.Locks.Pointer + (long)info.LockOffset);
        _localWaiters = new int[BlockCount];

        // Build this process's page-table entries for the object now (0.31 µs a page) instead of faulting on first
        // access (about 1 µs a page through a fresh mapping here).
        segment.Data.Populate((long)info.DataOffset, Size);
    }

    /// <summary>The object's name.</summary>
    public string Name { get; }

    /// <summary>Bytes of data.</summary>
    public long Size { get; }

    /// <summary>The broker's id of the object.</summary>
    public uint Id { get; }

    /// <summary>Number of lock blocks: ceil(Size / BlockSize).</summary>
    public int BlockCount { get; }

    /// <summary>The container the object belongs to.</summary>
    public Container Container => _container;

    /// <summary>The seed's <c>object_getattr</c>.</summary>
    public ObjectAttributes GetAttributes()
    {
        ThrowIfClosed();
        ThrowIfBrokerLost();
        return new ObjectAttributes(Size, (nint)_data);
    }

    /// <summary>
    /// The seed's <c>object_get</c>: read access to [offset, offset+size) directly in shared memory, protected from
    /// writes until the lease is disposed (<c>object_put</c>). Blocks of the range are read-locked in ascending
    /// order; a block a writer waits on is entered only by processes that already hold it (writer priority).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the object (nothing is locked).</exception>
    /// <exception cref="ObjectDisposedException">The object or container was left.</exception>
    /// <exception cref="SharedStoreException">Timeout; BrokerUnavailable (the broker died while waiting). Nothing is held.</exception>
    /// <exception cref="OperationCanceledException">The token fired while waiting. Nothing is held.</exception>
    public ObjectLease Get(long offset, long size, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ValidateRange(offset, size);
        long first = offset >> _blockShift;
        long last = size == 0 ? first - 1 : (offset + size - 1) >> _blockShift; // the seed's end index is one too many on a boundary
        bool torn;
        if (first == last && BlockLock.TryAcquireReadFast(_locks + first, _slot))
        {
            torn = BlockLock.IsTorn(_locks + first); // the uncontended one-block get: one CAS, no clock, no wait state
        }
        else
        {
            torn = AcquireReads(first, last, timeout, cancellationToken);
        }

        var rec = LeaseRecord.Rent();
        rec.Object = this;
        rec.Offset = offset;
        rec.Length = size;
        rec.First = first;
        rec.Last = last;
        rec.Torn = torn;
        rec.Version = ObjectVersion.Read(_locks); // under the read locks: every write of these blocks up to it is in
        return new ObjectLease(rec, rec.Generation);
    }

    private bool AcquireReads(long first, long last, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var wait = new LockWait(_conn.WaitPolicy, timeout, cancellationToken, this);
        bool torn = false;
        for (long b = first; b <= last; b++)
        {
            LockStatus s = BlockLock.AcquireRead(_locks + b, _slot, ref wait);
            if (s != LockStatus.Acquired)
            {
                for (long u = b - 1; u >= first; u--)
                {
                    BlockLock.ReleaseRead(_locks + u, _slot);
                }

                ThrowFor(s, "get", cancellationToken);
            }

            torn |= BlockLock.IsTorn(_locks + b);
        }

        return torn;
    }

    /// <summary><see cref="Get(long, long, TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public ObjectLease Get(long offset, long size) => Get(offset, size, Timeout.InfiniteTimeSpan);

    /// <summary>Releases the read locks of a lease (called by <see cref="ObjectLease.Dispose"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Put(long first, long last)
    {
        if (_container.IsClosed)
        {
            return; // the membership is gone and the broker released everything it held
        }

        // This handle may have been left while another handle of the object stays open (holds are per process, so
        // Leave allowed it): the membership and the hold are alive, and the hold must be released.
        for (long b = first; b <= last; b++)
        {
            BlockLock.ReleaseRead(_locks + b, _slot);
        }
    }

    /// <summary>
    /// The seed's <c>object_write</c>: copies <paramref name="data"/> to [offset, offset+data.Length) with every
    /// block of the range write-locked (ascending order), excluded against gets and other writes on those blocks.
    /// A block rewritten whole loses its torn mark.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the object (nothing is touched).</exception>
    /// <exception cref="SharedStoreException">PermissionDenied (read-only member); WouldDeadlock (this process holds a
    /// lease on one of the blocks); Timeout; BrokerUnavailable. Nothing is held and nothing was written.</exception>
    /// <remarks>Program order with this process's asynchronous writes: a write first waits for the ones it
    /// submitted earlier that are still pending, so overlapping ranges end with this write's bytes.</remarks>
    /// <exception cref="OperationCanceledException">The token fired while waiting; nothing was written.</exception>
    public void Write(long offset, ReadOnlySpan<byte> data, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ValidateRange(offset, data.Length);
        CheckWritable();
        if (data.Length == 0)
        {
            return;
        }

        long first = offset >> _blockShift;
        long last = (offset + data.Length - 1) >> _blockShift;
        ThrowIfHolds(offset, data.Length);
        _conn.OrderAfterAsyncWrites(timeout);

        var wait = new LockWait(_conn.WaitPolicy, timeout, cancellationToken, this);
        for (long b = first; b <= last; b++)
        {
            LockStatus s = BlockLock.AcquireWrite(_locks + b, _slot, _waitGate, ref _localWaiters[b], ref wait);
            if (s != LockStatus.Acquired)
            {
                for (long u = b - 1; u >= first; u--)
                {
                    BlockLock.ReleaseWrite(_locks + u, wroteWholeBlock: false);
                }

                ThrowFor(s, "write", cancellationToken);
            }
        }

        ObjectVersion.BeginWrite(_locks, first, last);
        data.CopyTo(new Span<byte>(_data + offset, data.Length));
        long published = ObjectVersion.Publish(_locks, first, last); // after the data, before the locks go

        long blockSize = 1L << _blockShift;
        long end = offset + data.Length;
        for (long b = first; b <= last; b++)
        {
            long bs = b << _blockShift;
            bool whole = offset <= bs && end >= Math.Min(bs + blockSize, Size);
            BlockLock.ReleaseWrite(_locks + b, whole, _durable);
        }

        ObjectVersion.WakeIfSleepers(_locks, published); // no system call unless a waiter sleeps
    }

    /// <summary><see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data) => Write(offset, data, Timeout.InfiniteTimeSpan);

    /// <summary>
    /// The seed's <c>object_awrite</c>: returns as soon as <paramref name="data"/> is in shared memory (in its ring
    /// slot, or staged when larger than a slot); the broker's device scheduler applies it under the block write locks
    /// later, so this never waits for readers. This process's writes apply in the order of their submissions. Writes
    /// larger than a quarter of the staging area go in chunks that the broker applies under one hold of the range's
    /// locks, as a whole; such a call waits until its last chunk is staged.
    /// </summary>
    /// <returns>The operation (object_opstatus / object_opcancel / object_opreturn); with
    /// <see cref="AsyncFullMode.Fail"/>, an operation already Failed with <see cref="ErrorCode.Busy"/> when full.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the object (nothing submitted).</exception>
    /// <exception cref="ObjectDisposedException">The object or container was left.</exception>
    /// <exception cref="SharedStoreException">PermissionDenied (read-only member); WouldDeadlock (a chunked write over
    /// a block this process holds a lease on); Timeout (the ring stayed full past AsyncSubmitTimeout);
    /// BrokerUnavailable. Nothing was submitted.</exception>
    public AsyncOperation AWrite(long offset, ReadOnlySpan<byte> data)
    {
        ValidateRange(offset, data.Length);
        CheckWritable();
        return _conn.Channel.SubmitWrite(this, offset, data, _conn.Options.AsyncFullMode == AsyncFullMode.Fail);
    }

    /// <summary><see cref="AWrite(long, ReadOnlySpan{byte})"/> that never waits for space: false (nothing submitted)
    /// when the ring or staging is full.</summary>
    public bool TryAWrite(long offset, ReadOnlySpan<byte> data, out AsyncOperation operation)
    {
        ValidateRange(offset, data.Length);
        CheckWritable();
        operation = _conn.Channel.SubmitWrite(this, offset, data, failWhenFull: true);
        return !(operation.Status == AsyncStatus.Failed && operation.Error == ErrorCode.Busy);
    }

    /// <summary>Zero-copy <c>object_awrite</c> of the first <paramref name="length"/> bytes (all when -1) of a buffer
    /// rented with <see cref="SharedStoreClient.RentBuffer"/>: the broker copies from it straight into the object. The
    /// buffer belongs to the operation afterwards (it is freed when the operation completes).</summary>
    /// <exception cref="ObjectDisposedException">The buffer was already submitted or disposed.</exception>
    public AsyncOperation AWrite(long offset, SharedBuffer buffer, int length = -1)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        int n = length < 0 ? buffer.Length : length;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(n, buffer.Length, nameof(length));
        ValidateRange(offset, n);
        CheckWritable();
        return _conn.Channel.SubmitWrite(this, offset, buffer, n, _conn.Options.AsyncFullMode == AsyncFullMode.Fail);
    }

    /// <summary>
    /// The seed's <c>object_aread</c>: copies [offset, offset+buffer.Length) into <paramref name="buffer"/> under the
    /// blocks' read locks, asynchronously. By default this process's device scheduler runs the copy over its own
    /// mapping (one copy, no broker round trip: docs/ARCHITECTURE.md §9 has the measurement against the broker path,
    /// <see cref="AsyncReadPath.Broker"/>). The buffer must stay valid until the operation finished.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the object (nothing started).</exception>
    /// <exception cref="ObjectDisposedException">The object or container was left.</exception>
    public AsyncOperation ARead(long offset, Memory<byte> buffer)
    {
        ValidateRange(offset, buffer.Length);
        if (_conn.Options.AsyncReadPath == AsyncReadPath.Broker)
        {
            return _conn.Channel.SubmitBrokerRead(this, offset, buffer, _conn.Options.AsyncFullMode == AsyncFullMode.Fail);
        }

        long first = offset >> _blockShift;
        long last = buffer.Length == 0 ? first : (offset + buffer.Length - 1) >> _blockShift;
        var op = new ClientReadOperation(this, offset, buffer, first, last);
        op.Start();
        return new AsyncOperation(op, 0, op.Id);
    }

    /// <summary>The seed's <c>object_destroy</c>: refuses new joins at once, blocks while other members use the
    /// object, then frees it. Every handle of the object in this container is closed afterwards. Refused
    /// (InvalidOperationException) while this process holds leases on the object, through any handle.</summary>
    /// <exception cref="SharedStoreException">Timeout (the object is put back; joins work again); PermissionDenied;
    /// Destroyed (already being destroyed); BrokerUnavailable.</exception>
    /// <exception cref="OperationCanceledException">The token fired; the object is put back as it was.</exception>
    public void Destroy(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        EnsureNoHolds(evenWithOtherHandles: true); // destroy frees the object under every handle of this process
        _conn.WaitForAsyncOperations(timeout);
        _conn.Call(new Request { ObjectDestroy = new ObjectDestroy { ContainerId = _container.Id, ObjectId = Id } }, timeout, cancellationToken, brokerWaits: true);
        _container.CloseHandlesOf(Id);
    }

    /// <summary><see cref="Destroy(TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Destroy() => Destroy(Timeout.InfiniteTimeSpan);

    /// <summary>The seed's <c>object_leave</c>. Refused (InvalidOperationException) while this process holds leases on
    /// the object through no other handle.</summary>
    public void Leave()
    {
        if (_closed)
        {
            return;
        }

        EnsureNoHolds();
        try
        {
            if (!_conn.Lost)
            {
                _conn.WaitForAsyncOperations(_conn.Options.RequestTimeout);
                _conn.Call(new Request { ObjectLeave = new ObjectLeave { ContainerId = _container.Id, ObjectId = Id } }, _conn.Options.RequestTimeout, default);
            }
        }
        catch (SharedStoreException e) when (e.Code is ErrorCode.BrokerUnavailable or ErrorCode.NotFound)
        {
            // Already released by the broker.
        }

        MarkClosed();
        _container.Forget(this);
    }

    /// <summary>Leaves the object (<see cref="Leave"/>).</summary>
    public void Dispose() => Leave();

    /// <summary>Whether any block of the object is marked torn (a writer died mid-write and no whole-block write has
    /// repaired it since). Read without locking: a hint; a lease's <see cref="ObjectLease.Torn"/> is exact.</summary>
    public bool AnyBlockTorn()
    {
        ThrowIfClosed();
        for (int b = 0; b < BlockCount; b++)
        {
            if (BlockLock.IsTorn(_locks + b))
            {
                return true;
            }
        }

        return false;
    }

    internal void EnsureNoHolds(bool evenWithOtherHandles = false)
    {
        if (_closed || (!evenWithOtherHandles && _container.OtherHandleOpen(this)))
        {
            return;
        }

        for (int b = 0; b < BlockCount; b++)
        {
            if (BlockLock.ReadHolds(_locks + b, _slot) != 0)
            {
                ThrowHelper.InvalidOperation($"this process still holds a lease on block {b} of '{Name}'; dispose its leases before leaving");
            }
        }
    }

    internal void MarkClosed() => _closed = true;

    private void CheckWritable()
    {
        if (!_container.CanWrite)
        {
            ThrowHelper.Throw(ErrorCode.PermissionDenied, $"container '{_container.Name}' lets only its creator write");
        }
    }

    /// <summary>WouldDeadlock when this process holds a lease on a block of the range (a write there waits for it).</summary>
    internal void ThrowIfHolds(long offset, long length)
    {
        if (length == 0)
        {
            return;
        }

        long last = (offset + length - 1) >> _blockShift;
        for (long b = offset >> _blockShift; b <= last; b++)
        {
            if (BlockLock.ReadHolds(_locks + b, _slot) != 0)
            {
                ThrowHelper.Throw(ErrorCode.WouldDeadlock, $"this process holds a lease on block {b} of '{Name}'; a write there would wait for itself");
            }
        }
    }

    /// <summary>A read-only memory-region device over the object's data, for this process's device scheduler.</summary>
    internal Devices.MemoryRegionDevice ReadDevice =>
        LazyInitializer.EnsureInitialized(ref _readDevice, () => new Devices.MemoryRegionDevice((nint)_data, Size, _segment.Data, readOnly: true));

    /// <summary>A lock wait of this process on one of the object's blocks has lasted the repair interval: ask the
    /// broker to check the block (docs/ARCHITECTURE.md §5, "Repair").</summary>
    void ILockRepairRequester.RequestCheck(BlockLockRecord* rec) =>
        _conn.RequestLockCheck(_container.Id, Id, rec - _locks); // over this handle's own connection

    internal byte* DataPointer => _data;

    internal BlockLockRecord* LockRecords => _locks;

    internal int Slot => _slot;

    internal BrokerConnection Connection => _conn;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ValidateRange(long offset, long size)
    {
        if (_closed)
        {
            ThrowHelper.ObjectDisposed($"object '{Name}'");
        }

        // A handle of a broker that is gone serves no new call (its memory is seen by nobody any more); leases held
        // stay readable. One volatile load of the connection's flag.
        ThrowIfBrokerLost();

        if ((ulong)offset > (ulong)Size || (ulong)size > (ulong)(Size - offset))
        {
            ThrowHelper.OutOfRange(nameof(offset), offset, size, Size);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfBrokerLost()
    {
        if (_conn.WaitPolicy.BrokerLost)
        {
            ThrowHelper.BrokerLost();
        }
    }

    private void ThrowIfClosed()
    {
        if (_closed)
        {
            ThrowHelper.ObjectDisposed($"object '{Name}'");
        }
    }

    private static void ThrowFor(LockStatus s, string what, CancellationToken token)
    {
        switch (s)
        {
            case LockStatus.Timeout: ThrowHelper.Timeout(what); break;
            case LockStatus.Canceled: ThrowHelper.Canceled(what, token); break;
            default: ThrowHelper.BrokerLost(); break;
        }
    }
}
