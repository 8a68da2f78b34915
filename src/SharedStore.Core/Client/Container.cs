using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore;

/// <summary>
/// A joined container (the seed's container id). Disposing it leaves the container (<c>container_leave</c>).
/// Thread-safe for concurrent object calls; leave and destroy must not race with calls on the same handle.
/// </summary>
public sealed class Container : IDisposable
{
    private readonly SharedStoreClient _client;
    private readonly BrokerConnection _conn;
    /// <summary>Mappings kept for leases that outlived their client (see <see cref="Abandon"/>): referenced here so
    /// no finalizer unmaps them under a lease; they live until the process exits.</summary>
    private static readonly List<ClientSegment> s_keptUnderLeases = [];
    private readonly Dictionary<uint, ClientSegment> _segments = [];
    private readonly ObjectHandles _objects = new(); // lock: itself
    private bool _closed;

    internal Container(SharedStoreClient client, BrokerConnection connection, ContainerInfo info)
    {
        _client = client;
        _conn = connection;
        Id = info.ContainerId;
        Name = info.Name;
        GroupId = info.GroupId;
        WritePolicy = (WritePolicy)info.WritePolicy;
        BlockSize = (int)info.BlockSize;
        Slot = (int)info.MemberSlot;
        CanWrite = info.CanWrite;
        DurablePath = info.DurablePath.Length == 0 ? null : info.DurablePath;
        MaxMembers = (int)info.MaxMembers;
        LockLines = (int)info.LockLines;
        Replication = ReplicationWire.FromWire(info.Replication);
    }

    /// <summary>How the container is replicated (<see cref="ContainerOptions.Replication"/>, with the broker's
    /// resolved stream and bucket names), or null.</summary>
    public ReplicationOptions? Replication { get; }

    /// <summary>Whether this broker is a replica of the container: its members read it, and every write, object
    /// create or destroy is refused with PermissionDenied (docs/ARCHITECTURE.md §14).</summary>
    public bool IsReplica => Replication is { Replica: true };

    /// <summary>Whether writes mark their blocks dirty for the broker: durable, or the owner of a replicated container.</summary>
    internal bool TracksDirtyBlocks => IsDurable || Replication is { Replica: false };

    /// <summary>Member processes the container admits at once (<see cref="ContainerOptions.MaxMembers"/>, chosen by its
    /// creator).</summary>
    public int MaxMembers { get; }

    /// <summary>Reader lines of the container's lock records (docs/ARCHITECTURE.md §3.2).</summary>
    internal int LockLines { get; }

    /// <summary>The directory the broker keeps this container's objects in, or null for a memory-only container.</summary>
    public string? DurablePath { get; }

    /// <summary>Whether the container is durable (<see cref="ContainerOptions.DurablePath"/>).</summary>
    public bool IsDurable => DurablePath is not null;

    /// <summary>
    /// The seed-style <c>container_flush(container_id)</c>: returns once every write to the container's objects that
    /// completed before this call (synchronous writes, and asynchronous ones whose status was Completed) is durable on
    /// disk, or, for the owner of a replicated container, acknowledged by JetStream (held by the stream with its
    /// replication factor). A memory-only container and a replica return at once. Waits for this process's own pending
    /// asynchronous writes first, so "submitted before" is enough for them; <paramref name="timeout"/> covers that
    /// wait and the flush.
    /// </summary>
    /// <exception cref="SharedStoreException">NoResources (the disk refused a write: full or failing; the memory copy
    /// is intact and stays dirty); IoError (replicated: NATS refused or did not acknowledge a block within the
    /// timeout; the blocks stay dirty and are sent again); PermissionDenied (replicated: this broker lost the ownership
    /// lease, another owner took over: nothing more is published); Timeout (also when this process's own
    /// asynchronous writes were still pending when it ended: nothing was flushed); BrokerUnavailable.</exception>
    /// <exception cref="OperationCanceledException">The token fired; the writes stay queued for write-back.</exception>
    public void Flush(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        if (!TracksDirtyBlocks)
        {
            return;
        }

        _conn.CallAfterAsyncOperations(new Request { Flush = new Flush { ContainerId = Id } }, timeout, cancellationToken, brokerWaits: true);
    }

    /// <summary><see cref="Flush(TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Flush() => Flush(Timeout.InfiniteTimeSpan);

    /// <summary>The container's name.</summary>
    public string Name { get; }

    /// <summary>The Unix group the container is shared with.</summary>
    public long GroupId { get; }

    /// <summary>Who may write its objects.</summary>
    public WritePolicy WritePolicy { get; }

    /// <summary>Bytes per lock block of its objects.</summary>
    public int BlockSize { get; }

    /// <summary>Whether this member may write (and create or destroy objects).</summary>
    public bool CanWrite { get; }

    /// <summary>The broker's id of the container (the seed's container id).</summary>
    public uint Id { get; }

    internal int Slot { get; }

    internal SharedStoreClient Client => _client;

    /// <summary>The connection this container was joined on: lost for good when its broker went.</summary>
    internal BrokerConnection Connection => _conn;

    /// <summary>The seed's <c>object_create</c>: allocates <paramref name="size"/> bytes (zeroed) and joins the object.
    /// The memory is reserved before this returns, so running out is this call's NoResources, never a fault later, and
    /// it is present in this process's page tables (and the broker's): touching it takes no page fault.</summary>
    /// <exception cref="SharedStoreException">AlreadyExists; NoResources; PermissionDenied (creator-only container);
    /// Destroyed; InvalidArgument (size 0 or above 1 TiB, bad name); BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public SharedObject CreateObject(string name, long size, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        ThrowIfClosed();
        var r = _conn.Call(new Request { ObjectCreate = new ObjectCreate { ContainerId = Id, Name = name, Size = (ulong)size } }, _conn.Options.RequestTimeout, cancellationToken);
        return Open(r.Response, r.Fds);
    }

    /// <summary>The seed's <c>object_join</c>.</summary>
    /// <exception cref="SharedStoreException">NotFound; Destroyed; BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public SharedObject JoinObject(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        ThrowIfClosed();
        var r = _conn.Call(new Request { ObjectJoin = new ObjectJoin { ContainerId = Id, Name = name } }, _conn.Options.RequestTimeout, cancellationToken);
        return Open(r.Response, r.Fds);
    }

    /// <summary>Joins the object <paramref name="name"/> as soon as it exists in this container: at once if it does,
    /// else when the broker creates it, joins it for this client and pushes the join (no polling, no second round trip:
    /// <c>name_wait</c>, docs/ARCHITECTURE.md §6).</summary>
    /// <exception cref="SharedStoreException">Timeout when it did not appear in time; BrokerUnavailable.</exception>
    /// <exception cref="OperationCanceledException">The token fired.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public SharedObject WaitForObject(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        ThrowIfClosed();
        return NameWaitLoop.Run($"object '{name}' of container '{Name}'", timeout, cancellationToken, () => _conn, Id, name, retryBrokerLoss: false, (_, resp, fds) => Open(resp, fds));
    }

    /// <summary>The seed's <c>container_destroy</c>: waits for this process's own pending asynchronous writes, refuses
    /// new joins, blocks until every other member has left, then frees the container and everything in it. This handle
    /// is closed afterwards. <paramref name="timeout"/> covers all of it.</summary>
    /// <exception cref="SharedStoreException">Timeout (the container is put back as it was; joins work again; when
    /// this process's own writes were still pending, the broker was asked nothing);
    /// PermissionDenied (only the creator or root destroys); Destroyed (already being destroyed).</exception>
    /// <exception cref="OperationCanceledException">The token fired; the container is put back as it was.</exception>
    /// <exception cref="InvalidOperationException">This process still holds leases in the container (as for
    /// <see cref="Leave"/>): destroying would unmap memory under them.</exception>
    public void Destroy(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        EnsureNoLeases();
        // This process's pending writes land before the memory goes.
        _conn.CallAfterAsyncOperations(new Request { ContainerDestroy = new ContainerDestroy { ContainerId = Id } }, timeout, cancellationToken, brokerWaits: true);
        CloseLocally();
    }

    /// <summary><see cref="Destroy(TimeSpan, CancellationToken)"/> without a timeout.</summary>
    public void Destroy() => Destroy(Timeout.InfiniteTimeSpan);

    /// <summary>The seed's <c>container_leave</c>: leaves every object still joined through this handle and the
    /// container, after this process's own pending asynchronous writes landed (they land while it is a member).
    /// Refused (InvalidOperationException) while this process still holds leases in the container.</summary>
    /// <exception cref="SharedStoreException">Timeout: those writes, or the broker's answer, took longer than
    /// <see cref="SharedStoreClientOptions.RequestTimeout"/> in all. When the writes were still pending the broker was
    /// asked nothing: the handle stays open and joined, and a later Leave (or Dispose) leaves.</exception>
    public void Leave()
    {
        if (_closed)
        {
            return;
        }

        EnsureNoLeases();
        try
        {
            if (!_conn.Lost)
            {
                _conn.CallAfterAsyncOperations(new Request { ContainerLeave = new ContainerLeave { ContainerId = Id } }, _conn.Options.RequestTimeout, default);
            }
        }
        catch (SharedStoreException e) when (e.Code is ErrorCode.BrokerUnavailable or ErrorCode.NotFound)
        {
            // The broker is gone (it released everything) or already dropped us: leaving is done either way.
        }

        CloseLocally();
    }

    /// <summary>Leaves the container (<see cref="Leave"/>).</summary>
    public void Dispose() => Leave();

    /// <summary>Closes the handle without telling the broker (the client is disconnecting: the broker releases the
    /// membership when the socket closes). Mappings under leases this process still holds are kept (until the
    /// process exits), so those leases stay readable instead of pointing at unmapped memory.</summary>
    internal void Abandon() => CloseLocally(keepMappingsUnderLeases: true);

    internal void Forget(SharedObject o)
    {
        lock (_objects)
        {
            _objects.Remove(o);
        }
    }

    /// <summary>Closes and forgets every handle of object <paramref name="objectId"/> (it was destroyed).</summary>
    internal void CloseHandlesOf(uint objectId)
    {
        lock (_objects)
        {
            foreach (var o in _objects.RemoveAll(objectId))
            {
                o.MarkClosed();
            }
        }
    }

    /// <summary>True once the membership is gone (left, destroyed or abandoned).</summary>
    internal bool IsClosed => Volatile.Read(ref _closed);

    internal bool OtherHandleOpen(SharedObject o)
    {
        lock (_objects)
        {
            return _objects.OtherHandleOpen(o);
        }
    }

    /// <summary>ObjectDisposedException on a closed handle; BrokerUnavailable on a handle of a broker that is gone.</summary>
    internal void ThrowIfClosed()
    {
        if (_closed)
        {
            ThrowHelper.ObjectDisposed($"container '{Name}'");
        }

        if (_conn.Lost)
        {
            ThrowHelper.BrokerLost();
        }
    }

    private void EnsureNoLeases()
    {
        lock (_objects)
        {
            foreach (var o in _objects)
            {
                o.EnsureNoHolds();
            }
        }
    }

    private void CloseLocally(bool keepMappingsUnderLeases = false)
    {
        if (_closed)
        {
            return;
        }

        bool keepMappings = keepMappingsUnderLeases && AnyLeaseHeld();
        _closed = true;
        lock (_objects)
        {
            foreach (var o in _objects)
            {
                o.MarkClosed();
            }

            _objects.Clear();
        }

        lock (_segments)
        {
            if (keepMappings)
            {
                lock (s_keptUnderLeases)
                {
                    s_keptUnderLeases.AddRange(_segments.Values);
                }
            }
            else
            {
                foreach (var s in _segments.Values)
                {
                    s.Dispose();
                }
            }

            _segments.Clear();
        }

        _client.Untrack(this);
    }

    /// <summary>Whether this process holds a read lock (a lease) on any block of an object joined through this handle.</summary>
    private bool AnyLeaseHeld()
    {
        lock (_objects)
        {
            foreach (var o in _objects)
            {
                if (o.HoldsAnyLease())
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>Maps a segment whose descriptors this client does not have; under the segments lock.</summary>
    private ClientSegment FetchSegment(uint segmentId)
    {
        var (resp, fds) = _conn.Call(new Request { SegmentFetch = new SegmentFetch { ContainerId = Id, SegmentId = segmentId } }, _conn.Options.RequestTimeout, default);
        try
        {
            if (resp.Segments.Count != 1 || fds.Count != 2 || resp.Segments[0].SegmentId != segmentId)
            {
                throw new SharedStoreException(ErrorCode.Internal, $"segment_fetch of segment {segmentId} answered {resp.Segments.Count} segment(s) and {fds.Count} descriptor(s)");
            }

            var seg = ClientSegment.Map(resp.Segments[0], fds[0], fds[1], _conn.BrokerPid, _conn.BrokerStart, LockLines);
            _segments[segmentId] = seg;
            return seg;
        }
        finally
        {
            foreach (var fd in fds)
            {
                fd.Dispose();
            }
        }
    }

    private unsafe SharedObject Open(Response resp, List<SafeFd> fds)
    {
        try
        {
            lock (_segments)
            {
                for (int i = 0; i < resp.Segments.Count; i++)
                {
                    var info = resp.Segments[i];
                    if (fds.Count < (2 * i) + 2)
                    {
                        throw new SharedStoreException(ErrorCode.Internal, "the broker sent fewer descriptors than segments");
                    }

                    if (!_segments.ContainsKey(info.SegmentId))
                    {
                        _segments[info.SegmentId] = ClientSegment.Map(info, fds[2 * i], fds[(2 * i) + 1], _conn.BrokerPid, _conn.BrokerStart, LockLines);
                    }
                }

                var oi = resp.Object;
                if (!_segments.TryGetValue(oi.SegmentId, out var seg))
                {
                    // The broker sends a segment's descriptors once per member, with the first reply that needs them.
                    // That reply may be another thread's, not mapped yet (it waits for this lock), or lost (its call
                    // timed out first): ask for them again rather than fail.
                    seg = FetchSegment(oi.SegmentId);
                }

                var obj = new SharedObject(this, oi, seg);
                lock (_objects)
                {
                    _objects.Add(obj);
                }

                return obj;
            }
        }
        finally
        {
            foreach (var fd in fds)
            {
                fd.Dispose(); // the mappings keep the memory; the descriptors are no longer needed
            }
        }
    }
}

/// <summary>This client's mappings of one container segment.</summary>
internal sealed unsafe class ClientSegment : IDisposable
{
    private ClientSegment(MappedRegion data, MappedRegion locks, int lines)
    {
        Data = data;
        Locks = locks;
        Lines = lines;
    }

    /// <summary>Reader lines of each lock record.</summary>
    public int Lines { get; }

    public MappedRegion Data { get; }

    public MappedRegion Locks { get; }

    /// <summary>Maps a segment the broker sent, once its lock table is seen to be complete (Magic), of this layout, and
    /// made by the broker instance this client said hello to (<paramref name="brokerPid"/> and
    /// <paramref name="brokerStart"/>, docs/ARCHITECTURE.md §3.1).</summary>
    /// <exception cref="SharedStoreException">VersionMismatch: any of these differ.</exception>
    public static ClientSegment Map(SegmentInfo info, SafeFd dataFd, SafeFd lockFd, int brokerPid, long brokerStart, int lines)
    {
        var locks = MappedRegion.Map(lockFd, (long)info.LockLength, writable: true);
        var h = (LockSegmentHeader*)locks.Pointer;
        // The record shape comes from the broker's reply (lines), and the header must agree: a member can write the
        // header (the lock memfd is mapped read-write), so it is checked, never the source of an offset.
        if (Volatile.Read(ref h->Magic) != LockSegmentDescriptor.Magic || h->Version != LockSegmentDescriptor.LayoutVersion || h->BrokerPid != brokerPid
            || h->BrokerStart != brokerStart || lines is < 1 or > BlockLockDescriptor.MaxLines
            || h->Slots != lines * BlockLockDescriptor.SlotsPerLine || h->RecordSize != BlockLockDescriptor.RecordSize(lines))
        {
            // The message reads the header: before the unmap (reading it after faulted).
            string message = $"segment {info.SegmentId}'s lock table has magic {h->Magic:X}, layout {h->Version}, broker pid {h->BrokerPid} started at {h->BrokerStart}, {h->Slots} slots of {h->RecordSize}-byte records; expected layout {LockSegmentDescriptor.LayoutVersion} of broker {brokerPid} started at {brokerStart} with {lines} reader line(s)";
            locks.Dispose();
            throw new SharedStoreException(ErrorCode.VersionMismatch, message);
        }

        try
        {
            var data = MappedRegion.Map(dataFd, (long)info.DataLength, writable: !info.ReadOnly);
            return new ClientSegment(data, locks, lines);
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    /// <summary>Takes a reference on both mappings for a holder of raw pointers into them (a
    /// <see cref="SharedObject"/> keeps its data and lock-record pointers from construction until it is closed):
    /// <see cref="Dispose"/> then only marks the mappings closed, and they are unmapped when the last reference is
    /// released, never under a pointer still held.</summary>
    public void AddRef()
    {
        bool data = false, locks = false;
        try
        {
            Data.DangerousAddRef(ref data);
            Locks.DangerousAddRef(ref locks);
        }
        catch
        {
            // ObjectDisposedException: the segment was disposed already; give back what was taken.
            if (data)
            {
                Data.DangerousRelease();
            }

            throw;
        }
    }

    /// <summary>Gives back a reference taken by <see cref="AddRef"/>.</summary>
    public void Release()
    {
        Locks.DangerousRelease();
        Data.DangerousRelease();
    }

    public void Dispose()
    {
        Data.Dispose();
        Locks.Dispose();
    }
}

/// <summary>The object handles opened through one container handle, by object id: add, remove, and every handle of
/// one id in constant time, so destroying or leaving the objects of a container one by one stays linear in their
/// number (a list scanned per call made destroying 100 000 objects take a minute). Almost every id has one handle;
/// an id joined again keeps a list. Not thread-safe: the container locks it.</summary>
internal sealed class ObjectHandles : IEnumerable<SharedObject>
{
    private readonly Dictionary<uint, object> _byId = []; // a SharedObject, or a List<SharedObject> of 2 or more

    public void Add(SharedObject o)
    {
        if (!_byId.TryGetValue(o.Id, out object? held))
        {
            _byId.Add(o.Id, o);
        }
        else if (held is List<SharedObject> list)
        {
            list.Add(o);
        }
        else
        {
            _byId[o.Id] = new List<SharedObject> { (SharedObject)held, o };
        }
    }

    public void Remove(SharedObject o)
    {
        if (!_byId.TryGetValue(o.Id, out object? held))
        {
            return;
        }

        if (held is List<SharedObject> list)
        {
            list.Remove(o);
            if (list.Count == 1)
            {
                _byId[o.Id] = list[0];
            }
        }
        else if (held == o)
        {
            _byId.Remove(o.Id);
        }
    }

    /// <summary>Forgets every handle of <paramref name="objectId"/> and returns them.</summary>
    public IReadOnlyList<SharedObject> RemoveAll(uint objectId) =>
        !_byId.Remove(objectId, out object? held) ? [] : held as List<SharedObject> ?? [(SharedObject)held];

    /// <summary>Whether a handle of <paramref name="o"/>'s object other than <paramref name="o"/> is open.</summary>
    public bool OtherHandleOpen(SharedObject o) =>
        _byId.TryGetValue(o.Id, out object? held) && (held is List<SharedObject> list ? list.Exists(x => x != o) : held != o);

    public void Clear() => _byId.Clear();

    public IEnumerator<SharedObject> GetEnumerator()
    {
        foreach (object held in _byId.Values)
        {
            if (held is List<SharedObject> list)
            {
                foreach (var o in list)
                {
                    yield return o;
                }
            }
            else
            {
                yield return (SharedObject)held;
            }
        }
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
