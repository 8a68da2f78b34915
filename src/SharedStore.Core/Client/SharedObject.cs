using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharedStore.Async;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Queues;
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
    private readonly ObjectView _view; // data, lock records, blocks, slot; references the segment's mappings
    private volatile bool _closed;

    // _closed again, as one pinned word: libsharedstore's C get path reads it without entering the runtime
    // (ClosedWord). Written once, by MarkClosed.
    private readonly int[] _closedWord = GC.AllocateArray<int>(1, pinned: true);
    private Devices.MemoryRegionDevice? _readDevice;

    internal SharedObject(Container container, ObjectInfo info, ClientSegment segment)
    {
        _container = container;
        _conn = container.Connection;
        Id = info.ObjectId;
        Name = info.Name;
        Size = (long)info.Size;
        BlockCount = (int)info.BlockCount;
        _view = new ObjectView(Name, segment.Data, (long)info.DataOffset, segment.Locks, (long)info.LockOffset, segment.Lines, Size,
            BitOperations.Log2((uint)container.BlockSize), container.Slot, container.TracksDirtyBlocks, repair: this);

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
        return new ObjectAttributes(Size, (nint)_view.Data);
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
        BlockRange range = AcquireLease(offset, size, timeout, cancellationToken, out bool torn, out long version);
        var rec = LeaseRecord.Rent(this);
        rec.Offset = offset;
        rec.Length = size;
        rec.First = range.First;
        rec.Last = range.Last;
        rec.Torn = torn;
        rec.Version = version;
        return new ObjectLease(rec, rec.Generation);
    }

    /// <summary>The locking half of <see cref="Get(long, long, TimeSpan, CancellationToken)"/>, with its checks and
    /// errors, for a caller that keeps the hold in a record of its own (the C library's operation table, whose slot
    /// claim is the double-put check) instead of a lease record: the blocks of the range are read-held on return, and
    /// <see cref="Put"/>(First, Last) releases them. <paramref name="version"/>: the object's version read under the
    /// read locks, so every write of these blocks up to it is in the range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal BlockRange AcquireLease(long offset, long size, TimeSpan timeout, CancellationToken cancellationToken, out bool torn, out long version)
    {
        ValidateRange(offset, size);
        BlockRange range = _view.Range(offset, size);
        if (!range.TryAcquireOneReadFast(out torn)) // the uncontended one-block get: one CAS, no clock, no wait state
        {
            torn = AcquireReads(range, timeout, cancellationToken);
        }

        version = ObjectVersion.Read(_view.Locks); // under the read locks: every write of these blocks up to it is in
        return range;
    }

    private bool AcquireReads(BlockRange range, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var wait = _view.Wait(_conn.WaitPolicy, timeout, cancellationToken);
        LockStatus s = range.AcquireRead(ref wait, out bool torn);
        if (s != LockStatus.Acquired)
        {
            ThrowFor(s, "get", cancellationToken);
        }

        return torn;
    }

    /// <summary><see cref="Get(long, long, TimeSpan, CancellationToken)"/> without a timeout.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // one call on the hot path, not two
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
        // Leave allowed it): the membership and the hold are alive, and the hold must be released. The records are
        // still mapped: the open container holds its own reference on the segment.
        new BlockRange(_view, first, last).ReleaseRead();
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

        BlockRange range = _view.Range(offset, data.Length);
        ThrowIfHolds(offset, data.Length);
        _conn.OrderAfterAsyncWrites(timeout);

        var wait = _view.Wait(_conn.WaitPolicy, timeout, cancellationToken);
        LockStatus s = range.AcquireWrite(ref wait);
        if (s != LockStatus.Acquired)
        {
            ThrowFor(s, "write", cancellationToken);
        }

        CopyAndRelease(range, offset, data);
    }

    /// <summary>The one copy of a write whose blocks <paramref name="range"/> this thread write-holds, and the release:
    /// the blocks' versions go Pending, the bytes are copied, the object's version is published (after the data,
    /// before the locks go: issue 17), the locks are released (a block rewritten whole loses its torn mark; a durable
    /// container's blocks are marked dirty while still held), and a sleeper on the version is woken. Shared by
    /// <see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/> and the direct path of
    /// <see cref="AWrite(long, ReadOnlySpan{byte})"/>, so both leave exactly the same state.</summary>
    private void CopyAndRelease(BlockRange range, long offset, ReadOnlySpan<byte> data)
    {
        ObjectVersion.BeginWrite(_view, range.First, range.Last);
        data.CopyTo(new Span<byte>(_view.Data + offset, data.Length));
        long published = ObjectVersion.Publish(_view, range.First, range.Last); // after the data, before the locks go
        range.ReleaseWrite(offset, data.Length);
        ObjectVersion.WakeIfSleepers(_view.Locks, published); // no system call unless a waiter sleeps
    }

    /// <summary>
    /// The direct path of an asynchronous write (docs/ARCHITECTURE.md §9.5, "Direct writes"): when this process has
    /// no asynchronous operation still pending and every block of the range can be write-held without waiting, the
    /// caller copies the data into the object itself, once, exactly as <see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/>
    /// does, and returns an operation that is born completed. Otherwise nothing was touched and the write is staged.
    /// <para><b>Why this keeps the order of this process's writes.</b> (1) No earlier write can land after this one:
    /// the path is taken only when the channel's CompletedThrough has reached the ring position of every submission
    /// made so far (<see cref="BrokerConnection.AsyncOperationsSettled"/>; it may spin briefly for that, see
    /// <see cref="DirectWaitTicks"/>), and the broker stores CompletedThrough only
    /// after it released the write locks of everything below it, so every staged write that precedes this call in
    /// program order (or happens before it through another thread) is already in the object, its locks released.
    /// (2) No later write can land before this one: this call returns only after the bytes are copied and the locks
    /// released, so any write submitted after it, staged or direct or synchronous, is submitted after this one is in
    /// place. Writes of two threads whose calls overlap in time have no order to keep, as with two staged writes whose
    /// submissions race for the submission lock. Broker-path reads count as pending operations too, so a direct write
    /// never overtakes a read queued before it.</para>
    /// </summary>
    private bool TryWriteDirect(long offset, ReadOnlySpan<byte> data)
    {
        if (!_conn.AsyncOperationsSettled(DirectWaitTicks(data.Length)))
        {
            return false;
        }

        BlockRange range = _view.Range(offset, data.Length);
        if (!range.TryAcquireWriteNow(_conn.WaitPolicy))
        {
            return false; // a block is held or wanted by someone else (or by a lease of this process): staged
        }

        CopyAndRelease(range, offset, data);
        _conn.CountDirectAsyncWrite();
        return true;
    }

    /// <summary><see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data) => Write(offset, data, Timeout.InfiniteTimeSpan);

    /// <summary>
    /// The seed's <c>object_awrite</c>: returns as soon as <paramref name="data"/> is in shared memory, and never waits
    /// for readers or other writers. A write larger than a ring slot's inline bytes (84) whose blocks are all free, while
    /// this process has no asynchronous operation pending, is copied into the object by this call itself, under the
    /// blocks' write locks, with one copy (as <see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/>
    /// would) and its operation is born completed. Otherwise the payload goes into its ring slot (up to 84 bytes) or is
    /// staged, and the broker's device scheduler applies it under the block write locks later. Either way this
    /// process's writes apply in the order of their submissions. Staged writes larger than a quarter of the staging area
    /// go in chunks that the broker applies under one hold of the range's locks, as a whole; such a call waits until
    /// its last chunk is staged.
    /// </summary>
    /// <returns>The operation (object_opstatus / object_opcancel / object_opreturn): already Completed when this call
    /// applied the write (opcancel then answers false); with <see cref="AsyncFullMode.Fail"/>, an operation already
    /// Failed with <see cref="ErrorCode.Busy"/> when full.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the object (nothing submitted).</exception>
    /// <exception cref="ObjectDisposedException">The object or container was left.</exception>
    /// <exception cref="SharedStoreException">PermissionDenied (read-only member); WouldDeadlock (a chunked write over
    /// a block this process holds a lease on); Timeout (the ring stayed full past AsyncSubmitTimeout);
    /// BrokerUnavailable. Nothing was submitted.</exception>
    public AsyncOperation AWrite(long offset, ReadOnlySpan<byte> data)
    {
        ValidateRange(offset, data.Length);
        CheckWritable();
        if (MayWriteDirect(data.Length) && TryWriteDirect(offset, data))
        {
            return AppliedDirectly(data.Length);
        }

        return ChannelFor(offset, data.Length).SubmitWrite(ChannelTarget, offset, data, _conn.SubmitWait);
    }

    /// <summary><see cref="AWrite(long, ReadOnlySpan{byte})"/> that never waits for space: false (nothing submitted)
    /// when the ring or staging is full.</summary>
    public bool TryAWrite(long offset, ReadOnlySpan<byte> data, out AsyncOperation operation)
    {
        ValidateRange(offset, data.Length);
        CheckWritable();
        if (MayWriteDirect(data.Length) && TryWriteDirect(offset, data))
        {
            operation = AppliedDirectly(data.Length);
            return true;
        }

        operation = ChannelFor(offset, data.Length).SubmitWrite(ChannelTarget, offset, data, SpaceWait.FailAtOnce);
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
        return _conn.Channel.SubmitWrite(ChannelTarget, offset, buffer, n, _conn.SubmitWait);
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
            return _conn.Channel.SubmitBrokerRead(ChannelTarget, offset, buffer, _conn.SubmitWait);
        }

        // The operation reads the mapping after this call returns: it holds a reference on the view until it is done.
        if (!_view.TryAddRef())
        {
            ThrowHelper.ObjectDisposed($"object '{Name}'"); // left by another thread meanwhile (misuse)
        }

        var op = new ClientReadOperation(this, _view, offset, buffer);
        op.Start();
        return new AsyncOperation(op, 0, op.Id);
    }

    /// <summary>The seed's <c>object_destroy</c>: waits for this process's own pending asynchronous writes, refuses
    /// new joins, blocks while other members use the object, then frees it; <paramref name="timeout"/> covers all of
    /// it. Every handle of the object in this container is closed afterwards. Refused (InvalidOperationException)
    /// while this process holds leases on the object, through any handle. Like a leave, it must not race with calls
    /// on the object's handles from other threads: a <see cref="Get(long, long)"/> through another handle that runs
    /// while the destroy is under way may take its lease after the check for leases, on memory the broker then frees
    /// (the C library closes every id of the object first, ARCHITECTURE §12.1).</summary>
    /// <exception cref="SharedStoreException">Timeout (the object is put back; joins work again; when this process's
    /// own writes were still pending, the broker was asked nothing); PermissionDenied;
    /// Destroyed (already being destroyed); BrokerUnavailable.</exception>
    /// <exception cref="OperationCanceledException">The token fired; the object is put back as it was.</exception>
    public void Destroy(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        EnsureNoHolds(evenWithOtherHandles: true); // destroy frees the object under every handle of this process
        _conn.CallAfterAsyncOperations(new Request { ObjectDestroy = new ObjectDestroy { ContainerId = _container.Id, ObjectId = Id } }, timeout, cancellationToken, brokerWaits: true);
        _container.CloseHandlesOf(Id);
    }

    /// <summary><see cref="Destroy(TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Destroy() => Destroy(Timeout.InfiniteTimeSpan);

    /// <summary>The seed's <c>object_leave</c>, after this process's own pending asynchronous writes landed. Refused
    /// (InvalidOperationException) while this process holds leases on the object through no other handle.</summary>
    /// <exception cref="SharedStoreException">Timeout: those writes, or the broker's answer, took longer than
    /// <see cref="SharedStoreClientOptions.RequestTimeout"/> in all. When the writes were still pending the broker was
    /// asked nothing: the handle stays open and joined, and a later Leave (or Dispose) leaves.</exception>
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
                _conn.CallAfterAsyncOperations(new Request { ObjectLeave = new ObjectLeave { ContainerId = _container.Id, ObjectId = Id } }, _conn.Options.RequestTimeout, default);
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
        return _view.All.AnyTorn();
    }

    internal void EnsureNoHolds(bool evenWithOtherHandles = false)
    {
        if (_closed || (!evenWithOtherHandles && _container.OtherHandleOpen(this)))
        {
            return;
        }

        long b = _view.All.FirstReadHeld();
        if (b >= 0)
        {
            ThrowHelper.InvalidOperation($"this process still holds a lease on block {b} of '{Name}'; dispose its leases before leaving");
        }
    }

    /// <summary>Whether this process holds a read (a lease) on any block of the object.</summary>
    internal bool HoldsAnyLease() => _view.All.FirstReadHeld() >= 0;

    /// <summary>Closes the handle and drops its view's reference on the mappings (the container's own reference
    /// keeps them until it is left).</summary>
    internal void MarkClosed()
    {
        _closed = true;
        Volatile.Write(ref _closedWord[0], 1);
        _view.Dispose();
    }

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
        long b = _view.Range(offset, length).FirstReadHeld();
        if (b >= 0)
        {
            ThrowHelper.Throw(ErrorCode.WouldDeadlock, $"this process holds a lease on block {b} of '{Name}'; a write there would wait for itself");
        }
    }

    /// <summary>A read-only memory-region device over the object's data, for this process's device scheduler.</summary>
    internal Devices.MemoryRegionDevice ReadDevice =>
        LazyInitializer.EnsureInitialized(ref _readDevice, () => new Devices.MemoryRegionDevice((nint)_view.Data, Size, _view, readOnly: true));

    /// <summary>A lock wait of this process on one of the object's blocks has lasted the repair interval: ask the
    /// broker to check the block (docs/ARCHITECTURE.md §5, "Repair").</summary>
    void ILockRepairRequester.RequestCheck(BlockLockRecord* rec) =>
        _conn.RequestLockCheck(_container.Id, Id, _view.BlockOf(rec)); // over this handle's own connection

    internal byte* DataPointer => _view.Data;

    internal BlockLockRecord* LockRecords => _view.Locks;

    /// <summary>Block <paramref name="block"/>'s lock record (tests that forge words, as a hostile member can).</summary>
    internal BlockLockRecord* LockRecord(long block) => _view.Record(block);

    /// <summary>Reader lines of each lock record.</summary>
    internal int LockLines => _view.Lines;

    /// <summary>The mapping and lock table (the bench's write-64b-nowaiter baseline locks through it as Write does).</summary>
    internal ObjectView View => _view;

    /// <summary>Non-zero once this handle is closed (left, or its object destroyed through another handle); valid while
    /// this object is reachable (src/SharedStore.Native/Handles/FastPath.cs points at it).</summary>
    internal int* ClosedWord => (int*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_closedWord));

    internal BrokerConnection Connection => _conn;

    /// <summary>Largest awrite carried inline in a ring slot of the default size (84 bytes); only larger ones may be
    /// applied directly (<see cref="TryWriteDirect"/>), the ones that would otherwise be copied twice (staging, then
    /// the object). An inline write costs one small copy into its slot and keeps the ring's batching (tens of millions
    /// a second), where the direct path pays the lock and version protocol per write.</summary>
    private const int InlineMax = ChannelDescriptor.DefaultSlotSize - RingDescriptor.SlotHeaderSize - ChannelMessage.HeaderSize;

    /// <summary>How long an awrite of <paramref name="bytes"/> may spin for this process's earlier asynchronous
    /// operations to finish before it gives up the direct path: about what its staging copy would cost (16 bytes a
    /// nanosecond, a copy that stays in cache here), at most 1 ms. Without it, one staged write made every later one of
    /// a stream staged too, each finding its predecessor still in the broker's hands (seen in awrite-1mib: whole
    /// rounds of 2048 writes went staged after one). Spending the time the staging copy would take anyway costs the
    /// caller nothing when the wait fails, and saves the second copy when it succeeds.</summary>
    private static long DirectWaitTicks(int bytes) => Math.Min(Stopwatch.Frequency / 1000, bytes * Stopwatch.Frequency / 16_000_000_000L);

    /// <summary>Whether an awrite of <paramref name="bytes"/> may try the direct path: larger than a slot's inline
    /// bytes, and the client's <see cref="AsyncWritePath"/> allows it.</summary>
    private bool MayWriteDirect(int bytes) => bytes > InlineMax && _conn.Options.AsyncWritePath == AsyncWritePath.Client;

    private static AsyncOperation AppliedDirectly(int bytes)
    {
        var op = new AppliedWriteOperation(bytes);
        return new AsyncOperation(op, 0, op.Id);
    }

    /// <summary>The ids a channel message names this object by.</summary>
    internal ChannelTarget ChannelTarget => new(_container.Id, Id);

    /// <summary>The channel a write of <paramref name="length"/> bytes goes to, after refusing a chunked one over a
    /// range this process holds a lease on: the broker holds the whole range's write locks from the first chunk to the
    /// last and waits for readers there, while the call waits for staging the broker frees chunk by chunk, so it would
    /// wait on itself (WouldDeadlock). A lost broker or gone channel is reported first, as the submission would.</summary>
    private AsyncChannel ChannelFor(long offset, int length)
    {
        AsyncChannel channel = _conn.Channel;
        if (length > channel.MaxChunk)
        {
            channel.ThrowIfUnusable();
            ThrowIfHolds(offset, length);
        }

        return channel;
    }

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
