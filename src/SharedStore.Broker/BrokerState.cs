using Google.Protobuf;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>Segment descriptors granted to a client with one reply: the data fd (read-only twin for members that may
/// not write) then the lock fd per segment, each referenced until <see cref="Release"/>.</summary>
internal sealed class SegmentGrant
{
    private readonly List<SafeFd> _refs = [];

    public List<SegmentInfo> Segments { get; } = [];

    public int[] Fds => _refs.Select(f => f.Fd).ToArray();

    public void AddRef(SafeFd fd)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        _refs.Add(fd);
    }

    public void Release()
    {
        foreach (var fd in _refs)
        {
            fd.DangerousRelease();
        }

        _refs.Clear();
    }
}

/// <summary>A request the broker refuses; becomes a Response with the error code. Expected outcome, not a bug.</summary>
internal sealed class BrokerError(ErrorCode code, string message) : Exception(message)
{
    public ErrorCode Code { get; } = code;
}

internal sealed class ContainerState
{
    public required uint Id { get; init; }
    public required string Name { get; init; }
    public required long GroupId { get; init; }
    public required uint CreatorUid { get; init; }
    public required Protocol.WritePolicy WritePolicy { get; init; }
    public required int BlockSize { get; init; }
    public bool Destroying { get; set; }
    public Membership?[] Slots { get; } = new Membership?[BlockLockDescriptor.MaxSlots];
    public Dictionary<string, ObjectState> Objects { get; } = new(StringComparer.Ordinal);
    public Dictionary<uint, ObjectState> ObjectsById { get; } = [];
    public List<Segment> Segments { get; } = [];
    public long Bytes { get; set; }

    /// <summary>The container's files when it is durable, else null.</summary>
    public DurableContainer? Durable { get; set; }

    public IEnumerable<Membership> Members => Slots.Where(m => m is not null)!;

    public int MemberCount => Slots.Count(m => m is not null);

    public bool CanWrite(PeerCredentials who) =>
        WritePolicy == Protocol.WritePolicy.AllMembers || who.Uid == CreatorUid || who.IsRoot;
}

internal sealed class ObjectState
{
    public required uint Id { get; init; }
    public required string Name { get; init; }
    public required long Size { get; init; }
    public required Segment Segment { get; init; }
    public required long DataOffset { get; init; }
    public required long RecordIndex { get; init; }
    public required long BlockCount { get; init; }

    /// <summary>The uid whose memory quota the object's pages are charged to (its creator).</summary>
    public required uint ChargedUid { get; init; }

    public bool Destroying { get; set; }

    /// <summary>Joins by all memberships (a membership may join an object several times).</summary>
    public int UseCount { get; set; }

    /// <summary>The broker's view for asynchronous writes (created on first use, under the state lock).</summary>
    public AsyncTarget? AsyncTarget { get; set; }

    /// <summary>The object's file when its container is durable, else null.</summary>
    public DurableObject? Durable { get; set; }

    /// <summary>What the broker's own lock slot holds on the object's blocks (appliers and write-back lock through it).</summary>
    public BrokerSlotLedger Ledger => LazyInitializer.EnsureInitialized(ref _ledger, () => new BrokerSlotLedger(BlockCount));

    private BrokerSlotLedger? _ledger;
}

/// <summary>One client process's membership of one container: its lock slot and its object joins.</summary>
internal sealed class Membership
{
    public required ClientSession Session { get; init; }
    public required ContainerState Container { get; init; }
    public required int Slot { get; init; }
    public required bool CanWrite { get; init; }
    public Dictionary<uint, int> ObjectUses { get; } = [];
    public HashSet<uint> SentSegments { get; } = [];
}

/// <summary>
/// All broker state: containers, objects, segments, memberships. One lock (<c>_gate</c>) guards it; control calls
/// are rare next to lock traffic, which never reaches the broker. Blocking calls wait on the same monitor.
/// </summary>
internal sealed partial class BrokerState : IDisposable
{
    private const int MaxNameBytes = 255;
    private const long MaxObjectSize = 1L << 40; // 1 TiB: beyond any memory this broker can hand out

    private readonly object _gate = new();
    private readonly BrokerOptions _options;
    private readonly Dictionary<string, ContainerState> _containers = new(StringComparer.Ordinal);
    private readonly Dictionary<uint, ContainerState> _containersById = [];
    private uint _nextContainerId = 1;
    private uint _nextObjectId = 1;
    private uint _nextSegmentId = 1;
    private readonly MemoryBudget _memory;
    private bool _disposed; // under _gate: segments are unmapped, nothing may touch lock records any more
    private readonly ILogger _logger;
    private readonly BrokerMetrics? _metrics;
    private readonly DurableStore? _durable;

    public BrokerState(BrokerOptions options, BrokerIdentity identity, ILogger? logger = null, BrokerMetrics? metrics = null)
    {
        _durable = new DurableStore(BrokerFolders.StateDirectory(options), logger ?? NullLogger.Instance);
        _options = options;
        _memory = new MemoryBudget(options.MemoryLimit, options.UidMemoryQuota);
        Identity = identity;
        _logger = logger ?? NullLogger.Instance;
        _metrics = metrics;
    }

    public BrokerIdentity Identity { get; }

    public long MemoryLimit => _options.MemoryLimit;

    public long BytesInUse => _memory.InUse;

    /// <summary>Shared memory charged against the memory limit and the per-uid quotas (objects, lock tables, channels).</summary>
    public MemoryBudget Memory => _memory;

    // ---- Containers ---------------------------------------------------------------------------------------

    public (ContainerInfo Info, Membership Member) CreateContainer(ClientSession session, ContainerCreate req)
    {
        ValidateName(req.Name, "container");
        var who = session.Credentials;
        if (req.GroupId < 0 || req.GroupId > uint.MaxValue - 1)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"group id {req.GroupId} is not a Unix group id");
        }

        if (!who.IsRoot && !who.InGroup(req.GroupId))
        {
            throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} is not in group {req.GroupId}; only root may create a container for a group it is not in");
        }

        int blockSize = req.BlockSize == 0 ? _options.DefaultBlockSize : (int)Math.Min(req.BlockSize, int.MaxValue);
        if (req.BlockSize != 0 && (req.BlockSize < 4096 || req.BlockSize > (1u << 30) || (req.BlockSize & (req.BlockSize - 1)) != 0))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"block size {req.BlockSize} must be a power of two from 4 KiB to 1 GiB");
        }

        lock (_gate)
        {
            if (_containers.ContainsKey(req.Name))
            {
                throw new BrokerError(ErrorCode.AlreadyExists, $"container '{req.Name}' already exists");
            }

            var c = new ContainerState
            {
                Id = _nextContainerId++,
                Name = req.Name,
                GroupId = req.GroupId,
                CreatorUid = who.Uid,
                WritePolicy = req.WritePolicy,
                BlockSize = blockSize,
            };
            if (req.DurablePath.Length > 0)
            {
                c.Durable = _durable!.CreateContainer(c, req.DurablePath, who);
            }

            _containers.Add(c.Name, c);
            _containersById.Add(c.Id, c);
            var m = AddMember(session, c);
            return (Describe(c, m), m);
        }
    }

    public (ContainerInfo Info, Membership Member) JoinContainer(ClientSession session, ContainerJoin req)
    {
        ValidateName(req.Name, "container");
        lock (_gate)
        {
            if (!_containers.TryGetValue(req.Name, out var c))
            {
                throw new BrokerError(ErrorCode.NotFound, $"container '{req.Name}' does not exist");
            }

            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{req.Name}' is being destroyed");
            }

            var who = session.Credentials;
            if (!who.IsRoot && who.Uid != c.CreatorUid && !who.InGroup(c.GroupId))
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} is not in group {c.GroupId} of container '{c.Name}'");
            }

            var m = AddMember(session, c);
            return (Describe(c, m), m);
        }
    }

    private Membership AddMember(ClientSession session, ContainerState c)
    {
        // One membership (one lock slot) per client process and container: a second join would need a second slot
        // for the same process, and must be refused before anything is recorded.
        if (session.Memberships.ContainsKey(c.Id))
        {
            throw new BrokerError(ErrorCode.AlreadyExists, $"this client is already a member of container '{c.Name}'");
        }

        int slot = Array.IndexOf(c.Slots, null, 0, BlockLockDescriptor.MaxMembers); // the last slot is the broker's
        if (slot < 0)
        {
            throw new BrokerError(ErrorCode.NoResources, $"container '{c.Name}' has its maximum of {BlockLockDescriptor.MaxMembers} member processes");
        }

        // A free slot's words may have been forged while it was free (docs/ARCHITECTURE.md §2): clear them before the
        // slot is given, so a new member never inherits a forgery as its own (unrepairable) hold.
        ClearFreeSlot(c, slot, session.Credentials.Pid);
        var m = new Membership { Session = session, Container = c, Slot = slot, CanWrite = c.CanWrite(session.Credentials) };
        c.Slots[slot] = m;
        session.Memberships.Add(c.Id, m);
        return m;
    }

    public void LeaveContainer(ClientSession session, uint containerId)
    {
        lock (_gate)
        {
            var m = Member(session, containerId);
            RemoveMember(m, died: false);
        }
    }

    /// <summary>Blocks until every other member has left, then frees the container. Joins are refused from the start.
    /// On timeout or cancellation the container is put back as it was.</summary>
    public void DestroyContainer(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token)
    {
        lock (_gate)
        {
            var m = Member(session, containerId);
            var c = m.Container;
            if (session.Credentials.Uid != c.CreatorUid && !session.Credentials.IsRoot)
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"only the creator (uid {c.CreatorUid}) or root may destroy container '{c.Name}'");
            }

            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{c.Name}' is already being destroyed");
            }

            c.Destroying = true;
            bool done = WaitUntil(() => c.MemberCount == (c.Slots[m.Slot] == m ? 1 : 0), timeout, token);
            // Put the container back whenever it still exists, also when the destroyer left or died while waiting
            // (its session close cancels the wait): otherwise it would stay "destroying" with live members.
            if (!done && _containersById.TryGetValue(c.Id, out var still) && still == c)
            {
                c.Destroying = false;
                Monitor.PulseAll(_gate);
                throw token.IsCancellationRequested
                    ? new BrokerError(ErrorCode.Canceled, "container destroy canceled")
                    : new BrokerError(ErrorCode.Timeout, $"container '{c.Name}' still has {c.MemberCount - (c.Slots[m.Slot] == m ? 1 : 0)} other member(s)");
            }

            if (c.Slots[m.Slot] == m)
            {
                RemoveMember(m, died: false); // frees the container: it is destroying and now memberless
            }
        }
    }

    private long RemoveMember(Membership m, bool died)
    {
        var c = m.Container;
        // Release everything the slot may hold in every block of the container. For a live client that left, its
        // library refused to leave with leases or writes outstanding, so this finds nothing; for a dead one it is
        // the recovery (see docs/ARCHITECTURE.md, "Recovery"). The same pass clears whatever names a slot with no
        // live member (forged, §2): a leave or death is when such words most often lose their last excuse.
        long released = ScrubSlot(c, m.Slot, died ? "death" : "leave", m.Session.Credentials.Pid);
        foreach (var (oid, uses) in m.ObjectUses)
        {
            if (c.ObjectsById.TryGetValue(oid, out var o))
            {
                o.UseCount -= uses;
                if (o.Destroying && o.UseCount == 0)
                {
                    FreeObject(c, o);
                }
            }
        }

        m.ObjectUses.Clear();
        c.Slots[m.Slot] = null;
        m.Session.Memberships.Remove(c.Id);
        if (died && released > 0)
        {
            Log.DeadClientRecovered(_logger, released, m.Session.Credentials.Pid, c.Name);
        }

        if (c.Destroying && c.MemberCount == 0)
        {
            FreeContainer(c);
        }

        Monitor.PulseAll(_gate);
        return released;
    }

    /// <summary>Under the state lock: releases <paramref name="slot"/> (whose process left or died) in every block of
    /// the container, and in the same pass clears what names no live member in each record (the slot counts as
    /// memberless). Returns the records in which the slot itself held something.</summary>
    private unsafe long ScrubSlot(ContainerState c, int slot, string occasion, int pid)
    {
        long released = 0, repaired = 0;
        var what = default(RepairResult);
        ulong live = LiveSlots(c) & ~(1UL << slot);
        foreach (var o in c.ObjectsById.Values)
        {
            for (long b = 0; b < o.BlockCount; b++)
            {
                BlockLockRecord* rec = o.Segment.Record(o.RecordIndex + b);
                if (BlockLock.ScrubSlot(rec, slot).Any)
                {
                    released++;
                }

                var r = o.Ledger.ClearUnowned(rec, b, live);
                if (r.Any)
                {
                    repaired++;
                    what.Add(r);
                }
            }
        }

        if (repaired > 0)
        {
            Log.LockStateRepaired(_logger, repaired, c.Name, what.ToString(), $"{occasion} of pid {pid}");
        }

        return released;
    }

    /// <summary>Under the state lock, before free slot <paramref name="slot"/> is given to a member: clears its reader
    /// byte, an Owner naming it (or no slot) and its Waiting bit in every block of the container. Nobody holds anything
    /// with a free slot, so whatever is there was forged (or left by a process that left mid-call: misuse).</summary>
    private unsafe void ClearFreeSlot(ContainerState c, int slot, int pid)
    {
        long repaired = 0;
        var what = default(RepairResult);
        var claims = new SlotClaims { LiveSlots = ~(1UL << slot) }; // every other slot, the broker's too, as it is
        foreach (var o in c.ObjectsById.Values)
        {
            for (long b = 0; b < o.BlockCount; b++)
            {
                var r = BlockLock.ClearUnowned(o.Segment.Record(o.RecordIndex + b), claims);
                if (r.Any)
                {
                    repaired++;
                    what.Add(r);
                }
            }
        }

        if (repaired > 0)
        {
            Log.LockStateRepaired(_logger, repaired, c.Name, what.ToString(), $"join of pid {pid} (slot {slot})");
        }
    }

    /// <summary>Bit s set: slot s has a member (under the state lock).</summary>
    private static ulong LiveSlots(ContainerState c)
    {
        ulong live = 0;
        for (int s = 0; s < BlockLockDescriptor.MaxMembers; s++)
        {
            if (c.Slots[s] is not null)
            {
                live |= 1UL << s;
            }
        }

        return live;
    }

    /// <summary>Under the state lock: clears what names no live member in one record of <paramref name="o"/>.</summary>
    private unsafe RepairResult RepairRecord(ContainerState c, ObjectState o, long block, string occasion)
    {
        var r = o.Ledger.ClearUnowned(o.Segment.Record(o.RecordIndex + block), block, LiveSlots(c));
        if (r.Any)
        {
            Log.LockStateRepaired(_logger, 1, c.Name, r.ToString(), $"{occasion} ('{o.Name}' block {block})");
        }

        return r;
    }

    /// <summary>lock_check: a member that has waited long on a block asks for its record to be checked; what names no
    /// live member is cleared and sleepers are woken (docs/ARCHITECTURE.md §5, "Repair").</summary>
    public LockCheckReply CheckLock(ClientSession session, LockCheck req)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                throw new BrokerError(ErrorCode.BrokerUnavailable, "the broker is stopping");
            }

            var m = Member(session, req.ContainerId);
            var o = Object(m, req.ObjectId);
            if (req.Block >= (ulong)o.BlockCount)
            {
                throw new BrokerError(ErrorCode.InvalidArgument, $"object '{o.Name}' has {o.BlockCount} block(s), not block {req.Block}");
            }

            var r = RepairRecord(m.Container, o, (long)req.Block, $"check asked by pid {session.Credentials.Pid}");
            return new LockCheckReply { ReaderSlots = r.ReaderSlots, Owner = r.Owner, WaitingSlots = r.WaitingSlots };
        }
    }

    /// <summary>The same check for the broker's own lock waits (an applier waited long on a block): called by the
    /// object's <see cref="AsyncTarget.Repair"/>. Does nothing once the object is gone.</summary>
    private unsafe void CheckLockForBroker(ContainerState c, ObjectState o, BlockLockRecord* rec)
    {
        lock (_gate)
        {
            if (_disposed || !c.ObjectsById.TryGetValue(o.Id, out var still) || still != o)
            {
                return;
            }

            long block = rec - o.Segment.Record(o.RecordIndex);
            if (block >= 0 && block < o.BlockCount)
            {
                RepairRecord(c, o, block, "check by an applier of the broker");
            }
        }
    }

    /// <summary>The repair requester of the broker's own lock waits on one object.</summary>
    private sealed unsafe class BrokerCheck(BrokerState state, ContainerState c, ObjectState o) : ILockRepairRequester
    {
        public void RequestCheck(BlockLockRecord* rec) => state.CheckLockForBroker(c, o, rec);
    }

    private void FreeContainer(ContainerState c)
    {
        foreach (var o in c.ObjectsById.Values.ToList())
        {
            FreeObject(c, o);
        }

        if (c.Durable is { } dc)
        {
            _durable!.RemoveContainer(dc); // destroy of a durable container deletes its files
        }

        foreach (var s in c.Segments)
        {
            _memory.Release(s.ChargedUid, s.LockLength);
            s.Dispose();
        }

        c.Segments.Clear();
        _containers.Remove(c.Name);
        _containersById.Remove(c.Id);
    }

    // ---- Objects ------------------------------------------------------------------------------------------

    public (ObjectInfo Info, SegmentGrant Grant) CreateObject(ClientSession session, ObjectCreate req)
    {
        ValidateName(req.Name, "object");
        if (req.Size == 0 || req.Size > MaxObjectSize)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"object size {req.Size} must be from 1 byte to 1 TiB");
        }

        long size = (long)req.Size;
        ObjectState o;
        Membership m;
        lock (_gate)
        {
            m = Member(session, req.ContainerId);
            var c = m.Container;
            if (!m.CanWrite)
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"container '{c.Name}' lets only its creator create objects");
            }

            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{c.Name}' is being destroyed");
            }

            if (c.Objects.ContainsKey(req.Name))
            {
                throw new BrokerError(ErrorCode.AlreadyExists, $"object '{req.Name}' already exists in container '{c.Name}'");
            }

            o = AllocateObject(c, req.Name, size, session.Credentials.Uid);
            o.UseCount = 1;
            if (c.Durable is { } dc)
            {
                try
                {
                    _durable!.AddObject(dc, o); // the file, preallocated: a full disk is this call's NoResources
                }
                catch (BrokerError)
                {
                    o.UseCount = 0;
                    FreeObject(c, o);
                    throw;
                }
            }

            m.ObjectUses[o.Id] = 1;
        }

        // Pay the first-touch cost (about 2 µs a page here) now rather than on a reader's first access. Large
        // objects populate in the background: create returns once the memory is reserved.
        if (size >= _options.BackgroundPopulateThreshold)
        {
            var seg = o.Segment;
            long off = o.DataOffset;
            ThreadPool.UnsafeQueueUserWorkItem(_ => seg.DataMap.Populate(off, size), null);
        }
        else
        {
            o.Segment.DataMap.Populate(o.DataOffset, size);
        }

        lock (_gate)
        {
            return (Describe(o), Grant(m, o));
        }
    }

    /// <summary>Allocates and reserves an object's memory and lock records in <paramref name="c"/> (no uses yet).
    /// Under the state lock. <paramref name="reserve"/> false: the caller reserves the memory before anyone may use
    /// the object (restore does it beside its reads, <see cref="DurableStore.RestoreObject"/>).</summary>
    private ObjectState AllocateObject(ContainerState c, string name, long size, uint chargeUid, bool reserve = true)
    {
        long blocks = (size + c.BlockSize - 1) / c.BlockSize;
        long pageBytes = LockSegmentDescriptor.RoundUpToPage(size);
        Segment? seg = null;
        long dataOffset = -1, record = -1;
        if (size < _options.DedicatedThreshold)
        {
            foreach (var s in c.Segments)
            {
                if (!s.Dedicated && s.TryAllocate(size, blocks, out dataOffset, out record))
                {
                    seg = s;
                    break;
                }
            }
        }

        long newSegmentBytes = 0;
        bool dedicated = size >= _options.DedicatedThreshold;
        if (seg is null)
        {
            newSegmentBytes = LockSegmentDescriptor.LengthFor(dedicated ? blocks : _options.LockRecordsPerSegment);
        }

        // Charged before anything is made: a refusal leaves nothing behind. The object's pages go to its creator's uid,
        // and so does a segment made for it (its lock table).
        _memory.Charge(chargeUid, pageBytes + newSegmentBytes, $"object '{name}'");
        bool freshSegment = seg is null;
        if (seg is null)
        {
            try
            {
                seg = dedicated
                    ? new Segment(_nextSegmentId++, c.Id, pageBytes, blocks, c.BlockSize, dedicated: true, Identity)
                    : new Segment(_nextSegmentId++, c.Id, _options.SegmentCapacity, _options.LockRecordsPerSegment, c.BlockSize, dedicated: false, Identity);
            }
            catch (SharedStoreException e)
            {
                _memory.Release(chargeUid, pageBytes + newSegmentBytes);
                throw new BrokerError(e.Code, e.Message);
            }

            seg.ChargedUid = chargeUid;
            c.Segments.Add(seg);
            if (!seg.TryAllocate(size, blocks, out dataOffset, out record))
            {
                throw new BrokerError(ErrorCode.Internal, "a fresh segment could not hold the object");
            }
        }

        // Reserve the memory now: running out is a clean error here, never a SIGBUS in a client later.
        if (reserve && !Memfd.Reserve(seg.DataFd, dataOffset, size, out int errno))
        {
            seg.Free(dataOffset, size, record, blocks);
            _memory.Release(chargeUid, pageBytes);
            if (freshSegment)
            {
                c.Segments.Remove(seg); // made for this object alone: do not keep it (or its accounting) around
                _memory.Release(seg.ChargedUid, seg.LockLength);
                seg.Dispose();
            }

            throw new BrokerError(ErrorCode.NoResources, $"cannot reserve {size} bytes of shared memory: {Interop.Libc.StrError(errno)}");
        }

        var o = new ObjectState
        {
            Id = _nextObjectId++,
            Name = name,
            Size = size,
            Segment = seg,
            DataOffset = dataOffset,
            RecordIndex = record,
            BlockCount = blocks,
            ChargedUid = chargeUid,
        };
        seg.ObjectCount++;
        c.Objects.Add(o.Name, o);
        c.ObjectsById.Add(o.Id, o);
        c.Bytes += size;
        return o;
    }

    public (ObjectInfo Info, SegmentGrant Grant) JoinObject(ClientSession session, ObjectJoin req)
    {
        ValidateName(req.Name, "object");
        lock (_gate)
        {
            var m = Member(session, req.ContainerId);
            if (!m.Container.Objects.TryGetValue(req.Name, out var o))
            {
                throw new BrokerError(ErrorCode.NotFound, $"object '{req.Name}' does not exist in container '{m.Container.Name}'");
            }

            if (o.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"object '{req.Name}' is being destroyed");
            }

            o.UseCount++;
            m.ObjectUses[o.Id] = m.ObjectUses.GetValueOrDefault(o.Id) + 1;
            return (Describe(o), Grant(m, o));
        }
    }

    public void LeaveObject(ClientSession session, ObjectLeave req)
    {
        lock (_gate)
        {
            var m = Member(session, req.ContainerId);
            var o = Object(m, req.ObjectId);
            DropUse(m, o);
            Monitor.PulseAll(_gate);
        }
    }

    private void DropUse(Membership m, ObjectState o)
    {
        int uses = m.ObjectUses[o.Id];
        if (uses == 1)
        {
            m.ObjectUses.Remove(o.Id);
        }
        else
        {
            m.ObjectUses[o.Id] = uses - 1;
        }

        o.UseCount--;
        if (o.Destroying && o.UseCount == 0)
        {
            FreeObject(m.Container, o);
        }
    }

    /// <summary>Blocks while other members use the object, then frees it. Joins are refused from the start. On
    /// timeout or cancellation the object is put back as it was.</summary>
    public void DestroyObject(ClientSession session, ObjectDestroy req, TimeSpan timeout, CancellationToken token)
    {
        lock (_gate)
        {
            var m = Member(session, req.ContainerId);
            var o = Object(m, req.ObjectId);
            if (!m.CanWrite)
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"container '{m.Container.Name}' lets only its creator destroy objects");
            }

            if (o.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"object '{o.Name}' is already being destroyed");
            }

            o.Destroying = true;
            int Mine() => m.ObjectUses.GetValueOrDefault(o.Id);
            bool done = WaitUntil(() => o.UseCount - Mine() == 0, timeout, token);
            // Put the object back whenever it still exists, also when the destroyer's membership is gone (it left
            // the container or died while waiting): others still use it, so it must not be freed below.
            if (!done && m.Container.ObjectsById.ContainsKey(o.Id))
            {
                o.Destroying = false;
                Monitor.PulseAll(_gate);
                throw token.IsCancellationRequested
                    ? new BrokerError(ErrorCode.Canceled, "object destroy canceled")
                    : new BrokerError(ErrorCode.Timeout, $"object '{o.Name}' is still used by {o.UseCount - Mine()} other join(s)");
            }

            if (m.Container.ObjectsById.ContainsKey(o.Id))
            {
                o.UseCount -= Mine();
                m.ObjectUses.Remove(o.Id);
                FreeObject(m.Container, o);
            }

            Monitor.PulseAll(_gate);
        }
    }

    private void FreeObject(ContainerState c, ObjectState o)
    {
        if (!c.ObjectsById.Remove(o.Id))
        {
            return;
        }

        if (c.Durable is { } dc)
        {
            _durable!.RemoveObject(dc, o); // write-back stops touching the memory before it is freed
        }

        c.Objects.Remove(o.Name);
        c.Bytes -= o.Size;
        _memory.Release(o.ChargedUid, LockSegmentDescriptor.RoundUpToPage(o.Size));
        foreach (var member in c.Members)
        {
            member.ObjectUses.Remove(o.Id);
        }

        o.Segment.Free(o.DataOffset, o.Size, o.RecordIndex, o.BlockCount);
        if (--o.Segment.ObjectCount == 0 && o.Segment.Dedicated)
        {
            // A dedicated segment dies with its object; clients that still map it keep their mapping until they drop it.
            c.Segments.Remove(o.Segment);
            _memory.Release(o.Segment.ChargedUid, o.Segment.LockLength);
            o.Segment.Dispose();
        }
    }

    // ---- Durable containers ---------------------------------------------------------------------------------

    /// <summary>container_flush: every write that completed before it is on disk when it returns.</summary>
    public void Flush(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token)
    {
        DurableContainer? dc;
        lock (_gate)
        {
            dc = Member(session, containerId).Container.Durable;
        }

        if (dc is not null)
        {
            _durable!.Flush(dc, timeout, token);
        }
    }

    /// <summary>Broker start: brings back every registered durable container with its objects (memory allocated as
    /// for a create, blocks loaded from their files). A container that cannot be read is logged and skipped.</summary>
    public List<RestoreReport> RestoreDurable()
    {
        var reports = new List<RestoreReport>();
        foreach (string dir in _durable!.RegisteredDirectories())
        {
            ContainerState? c = null;
            DurableContainer? dc = null;
            try
            {
                dc = _durable.OpenRegistered(dir); // the folder opened O_NOFOLLOW and checked again
                var meta = dc.Meta;
                var objects = new List<(ObjectState O, string File)>();
                lock (_gate)
                {
                    if (_containers.ContainsKey(meta.Name))
                    {
                        throw new InvalidDataException($"a container named '{meta.Name}' exists already");
                    }

                    c = new ContainerState
                    {
                        Id = _nextContainerId++,
                        Name = meta.Name,
                        GroupId = meta.GroupId,
                        CreatorUid = meta.CreatorUid,
                        WritePolicy = meta.WritePolicy,
                        BlockSize = (int)meta.BlockSize,
                    };
                    _durable.AdoptContainer(dc);
                    c.Durable = dc;
                    _containers.Add(c.Name, c);
                    _containersById.Add(c.Id, c);
                    foreach (var om in meta.Objects)
                    {
                        objects.Add((AllocateObject(c, om.Name, (long)om.Size, c.CreatorUid, reserve: false), om.File)); // RestoreObject reserves
                    }
                }

                foreach (var (o, file) in objects)
                {
                    var report = _durable.RestoreObject(dc, o, file);
                    Log.DurableRestored(_logger, report.Container, report.Object, report.Blocks, report.TornSlots, report.CorruptBlocks);
                    reports.Add(report);
                }
            }
            catch (Exception e) when (e is IOException or InvalidDataException or InvalidProtocolBufferException or BrokerError or UnauthorizedAccessException or Devices.DeviceException)
            {
                Log.DurableRestoreFailed(_logger, dir, e.Message);

                // All or nothing: a container whose object file failed (a damaged header) was already listed with
                // its objects allocated, and clients would have been served the failed object (and every later one)
                // as zeros, unmarked. Take it out again; its files stay untouched and registered.
                _durable.AbandonRestore(dir, dc);
                if (c is not null)
                {
                    lock (_gate)
                    {
                        c.Durable = null; // FreeContainer must not delete the files
                        FreeContainer(c);
                    }
                }
            }
        }

        return reports;
    }

    /// <summary>Durable figures, for metrics and benches.</summary>
    public DurableStore? Durable => _durable;

    // ---- Asynchronous path ---------------------------------------------------------------------------------

    /// <summary>Resolves the object an asynchronous message names, as <paramref name="session"/> may use it: it must
    /// be a member of the container and have the object joined. The target stays valid while the session keeps the
    /// object joined; the session's applier drops its cached targets before any leave or destroy is executed.</summary>
    public unsafe ErrorCode ResolveAsync(ClientSession session, uint containerId, uint objectId, out AsyncTarget? target, out bool canWrite)
    {
        target = null;
        canWrite = false;
        lock (_gate)
        {
            if (_disposed)
            {
                return ErrorCode.BrokerUnavailable;
            }

            if (!session.Memberships.TryGetValue(containerId, out var m) || !m.ObjectUses.ContainsKey(objectId)
                || !m.Container.ObjectsById.TryGetValue(objectId, out var o))
            {
                return ErrorCode.NotFound;
            }

            canWrite = m.CanWrite;
            target = o.AsyncTarget ??= new AsyncTarget(
                o.Segment.DataMap.Pointer + o.DataOffset,
                o.Segment.Record(o.RecordIndex),
                o.Size,
                System.Numerics.BitOperations.Log2((uint)m.Container.BlockSize),
                o.Segment.DataMap,
                durable: m.Container.Durable is not null,
                o.Ledger,
                new BrokerCheck(this, m.Container, o));
            return ErrorCode.Ok;
        }
    }

    /// <summary>Releases the lock holds of a dead client's slots now, before its applier drains the ring (a pending
    /// write may wait for a block the dead process held). Memberships stay until <see cref="SessionClosed"/>.</summary>
    public void ScrubSession(ClientSession session)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            foreach (var m in session.Memberships.Values)
            {
                ScrubSlot(m.Container, m.Slot, "death", session.Credentials.Pid);
            }
        }
    }

    // ---- Sessions -----------------------------------------------------------------------------------------

    /// <summary>Whether the session is a member of at least one container.</summary>
    public bool IsMember(ClientSession session)
    {
        lock (_gate)
        {
            return session.Memberships.Count > 0;
        }
    }

    /// <summary>The client's socket closed: it exited or was killed. Release everything it held.</summary>
    public void SessionClosed(ClientSession session)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return; // shutting down: the segments are gone, and with them everything the session held
            }

            if (session.Memberships.Count == 0)
            {
                return;
            }

            long released = 0;
            foreach (var m in session.Memberships.Values.ToList())
            {
                released += RemoveMember(m, died: true);
            }

            _metrics?.SessionRecovered(released);
        }
    }

    /// <summary>Figures for the observable instruments and the status request.</summary>
    public BrokerSnapshot Snapshot(int sessions)
    {
        lock (_gate)
        {
            int objects = 0;
            long objectBytes = 0;
            foreach (var c in _containers.Values)
            {
                objects += c.ObjectsById.Count;
                objectBytes += c.Bytes;
            }

            return new BrokerSnapshot(_containers.Count, objects, objectBytes, _memory.InUse, sessions);
        }
    }

    /// <summary>Who holds or waits on each block of an object, read from the lock records the broker maps. Lists
    /// every block with a holder or a waiter (a reply of any size is sent in parts). The caller must be allowed to join
    /// the container. The records change under us: each block is a snapshot of its own words, not of the object.</summary>
    public unsafe HoldersReply Holders(ClientSession session, HoldersRequest req)
    {
        ValidateName(req.ContainerName, "container");
        ValidateName(req.ObjectName, "object");
        var reply = new HoldersReply();
        lock (_gate)
        {
            if (!_containers.TryGetValue(req.ContainerName, out var c))
            {
                throw new BrokerError(ErrorCode.NotFound, $"container '{req.ContainerName}' does not exist");
            }

            var who = session.Credentials;
            if (!who.IsRoot && who.Uid != c.CreatorUid && !who.InGroup(c.GroupId))
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} is not in group {c.GroupId} of container '{c.Name}'");
            }

            if (!c.Objects.TryGetValue(req.ObjectName, out var o))
            {
                throw new BrokerError(ErrorCode.NotFound, $"object '{req.ObjectName}' does not exist in container '{c.Name}'");
            }

            reply.BlockSize = (uint)c.BlockSize;
            reply.BlockCount = (ulong)o.BlockCount;
            for (long b = 0; b < o.BlockCount; b++)
            {
                var rec = o.Segment.Record(o.RecordIndex + b);
                var entry = DescribeBlock(c, rec, b);
                if (entry is not null)
                {
                    reply.Blocks.Add(entry);
                }
            }
        }

        // Process names outside the lock: /proc reads are system calls.
        var names = new Dictionary<int, string>();
        foreach (var block in reply.Blocks)
        {
            foreach (var h in block.Readers.Concat(block.Waiting).Append(block.Writer))
            {
                if (h is not null && h.Pid != 0)
                {
                    if (!names.TryGetValue(h.Pid, out string? name))
                    {
                        name = ProcessName(h.Pid);
                        names[h.Pid] = name;
                    }

                    h.ProcessName = name;
                }
            }
        }

        return reply;
    }

    private static unsafe BlockHolders? DescribeBlock(ContainerState c, BlockLockRecord* rec, long block)
    {
        uint owner = Volatile.Read(ref rec->Owner);
        ulong waiting = Volatile.Read(ref rec->Waiting);
        BlockHolders? entry = null;
        ulong* words = (ulong*)rec;
        for (int w = 0; w < BlockLockDescriptor.ReaderWords; w++)
        {
            ulong word = Volatile.Read(ref words[w]);
            for (int i = 0; word != 0 && i < 8; i++, word >>= 8)
            {
                uint count = (uint)(word & 0xFF);
                if (count != 0)
                {
                    entry ??= new BlockHolders { Block = (ulong)block };
                    var h = Holder(c, (w << 3) + i);
                    h.Count = count;
                    entry.Readers.Add(h);
                }
            }
        }

        if (owner != 0)
        {
            entry ??= new BlockHolders { Block = (ulong)block };
            var h = Holder(c, (int)(owner & BlockLockDescriptor.OwnerSlotMask) - 1);
            h.Active = (owner & BlockLockDescriptor.OwnerActiveBit) != 0;
            h.Count = 1;
            entry.Writer = h;
        }

        for (int s = 0; waiting != 0; s++, waiting >>= 1)
        {
            if ((waiting & 1) != 0)
            {
                entry ??= new BlockHolders { Block = (ulong)block };
                entry.Waiting.Add(Holder(c, s));
            }
        }

        if (entry is not null)
        {
            entry.Torn = BlockLock.IsTorn(rec);
        }

        return entry;
    }

    private static LockHolder Holder(ContainerState c, int slot) => new()
    {
        Slot = (uint)Math.Max(slot, 0),
        Pid = slot >= 0 && slot < c.Slots.Length && c.Slots[slot] is { } m ? m.Session.Credentials.Pid : 0,
    };

    private static string ProcessName(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").TrimEnd('\n');
        }
        catch (IOException)
        {
            return "";
        }
        catch (UnauthorizedAccessException)
        {
            return "";
        }
    }

    public ListReply List()
    {
        var reply = new ListReply();
        lock (_gate)
        {
            foreach (var c in _containers.Values)
            {
                var e = new ContainerEntry { Info = Describe(c, null), Bytes = (ulong)c.Bytes };
                e.MemberPids.AddRange(c.Members.Select(m => m.Session.Credentials.Pid));
                e.MemberSlots.AddRange(c.Members.Select(m => (uint)m.Slot));
                foreach (var o in c.ObjectsById.Values)
                {
                    e.Objects.Add(new ObjectEntry { Info = Describe(o), UseCount = (uint)o.UseCount });
                }

                reply.Containers.Add(e);
            }
        }

        return reply;
    }

    public void Heartbeat()
    {
        lock (_gate)
        {
            foreach (var c in _containers.Values)
            {
                foreach (var s in c.Segments)
                {
                    s.Heartbeat();
                }
            }
        }
    }

    /// <summary>Wakes every lock sleeper of every container (shutdown: clients then notice the broker is gone).</summary>
    public unsafe void WakeAllSleepers()
    {
        lock (_gate)
        {
            foreach (var c in _containers.Values)
            {
                foreach (var o in c.ObjectsById.Values)
                {
                    for (long b = 0; b < o.BlockCount; b++)
                    {
                        BlockLock.WakeAllSleepers(o.Segment.Record(o.RecordIndex + b));
                    }
                }
            }
        }
    }

    public void Dispose()
    {
        _durable?.Dispose(); // write-back stops (files stay) before the memory it reads goes
        lock (_gate)
        {
            _disposed = true;
            foreach (var c in _containers.Values.ToList())
            {
                foreach (var s in c.Segments)
                {
                    s.Dispose();
                }
            }

            _containers.Clear();
            _containersById.Clear();
        }
    }

    // ---- Helpers ------------------------------------------------------------------------------------------

    private bool WaitUntil(Func<bool> condition, TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        // The callback takes _gate, which this thread holds whenever it is not inside Monitor.Wait. Disposing the
        // registration would wait for a callback already running on the canceling thread — which waits for _gate:
        // a deadlock of the whole broker. Unregister does not wait; a late callback just pulses once more.
        var reg = token.Register(() =>
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        });
        try
        {
            return WaitLoop(condition, deadline, token);
        }
        finally
        {
            reg.Unregister();
        }
    }

    private bool WaitLoop(Func<bool> condition, long deadline, CancellationToken token)
    {
        while (!condition())
        {
            if (token.IsCancellationRequested)
            {
                return false;
            }

            long left = deadline - Stopwatch.GetTimestamp();
            if (left <= 0)
            {
                return false;
            }

            int ms = (int)Math.Clamp(left * 1000 / Stopwatch.Frequency, 1, 1000);
            Monitor.Wait(_gate, ms);
        }

        return true;
    }

    private static Membership Member(ClientSession session, uint containerId) =>
        session.Memberships.TryGetValue(containerId, out var m)
            ? m
            : throw new BrokerError(ErrorCode.NotFound, $"container {containerId} does not exist or this client is not a member");

    private static ObjectState Object(Membership m, uint objectId) =>
        m.Container.ObjectsById.TryGetValue(objectId, out var o) && m.ObjectUses.ContainsKey(objectId)
            ? o
            : throw new BrokerError(ErrorCode.NotFound, $"object {objectId} does not exist in container '{m.Container.Name}' or was not joined");

    /// <summary>The segments this member has not received yet, with a reference taken on each descriptor under the
    /// state lock: a concurrent destroy may dispose the segment before the reply is sent, and the descriptor must not
    /// be closed (and its number reused) until then. The session releases the references after sending.</summary>
    private static SegmentGrant Grant(Membership m, ObjectState o)
    {
        var grant = new SegmentGrant();
        if (m.SentSegments.Add(o.Segment.Id))
        {
            AddSegment(grant, m, o.Segment);
        }

        return grant;
    }

    private static void AddSegment(SegmentGrant grant, Membership m, Segment seg)
    {
        grant.Segments.Add(new SegmentInfo { SegmentId = seg.Id, DataLength = (ulong)seg.DataCapacity, LockLength = (ulong)seg.LockLength, ReadOnly = !m.CanWrite });
        grant.AddRef(m.CanWrite ? seg.DataFd : seg.DataReadOnlyFd);
        grant.AddRef(seg.LockFd);
    }

    /// <summary>A segment's descriptors again, for a member whose client lost the reply that carried them.</summary>
    public SegmentGrant FetchSegment(ClientSession session, SegmentFetch req)
    {
        lock (_gate)
        {
            var m = Member(session, req.ContainerId);
            var seg = m.Container.Segments.Find(s => s.Id == req.SegmentId)
                ?? throw new BrokerError(ErrorCode.NotFound, $"container '{m.Container.Name}' has no segment {req.SegmentId}");
            var grant = new SegmentGrant();
            m.SentSegments.Add(seg.Id);
            AddSegment(grant, m, seg);
            return grant;
        }
    }

    private static void ValidateName(string name, string what)
    {
        if (string.IsNullOrEmpty(name) || System.Text.Encoding.UTF8.GetByteCount(name) > MaxNameBytes || name.Contains('\0', StringComparison.Ordinal))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"{what} name must be 1 to {MaxNameBytes} UTF-8 bytes without NUL");
        }
    }

    private static ContainerInfo Describe(ContainerState c, Membership? m) => new()
    {
        ContainerId = c.Id,
        Name = c.Name,
        GroupId = c.GroupId,
        WritePolicy = c.WritePolicy,
        BlockSize = (uint)c.BlockSize,
        MemberSlot = m is null ? 0u : (uint)m.Slot,
        CanWrite = m?.CanWrite ?? false,
        CreatorUid = (int)c.CreatorUid,
        DurablePath = c.Durable?.Directory ?? "",
    };

    private static ObjectInfo Describe(ObjectState o) => new()
    {
        ObjectId = o.Id,
        Name = o.Name,
        Size = (ulong)o.Size,
        SegmentId = o.Segment.Id,
        DataOffset = (ulong)o.DataOffset,
        LockOffset = (ulong)(LockSegmentDescriptor.RecordsOffset + (o.RecordIndex * BlockLockDescriptor.Size)),
        BlockCount = (uint)o.BlockCount,
    };
}
