using Google.Protobuf;
using Microsoft.Extensions.Logging;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// Names and lifecycle: create, join, leave and destroy of containers and objects, the segment descriptors each member
/// receives, durable containers brought back at start, and the object an asynchronous message names. Every call
/// takes the model lock (<see cref="BrokerModel"/>) around its change; permissions are
/// <see cref="AccessPolicy"/>'s, placement and memory <see cref="SegmentPlacement"/>'s, lock records
/// <see cref="LockRepair"/>'s. Durable files are the <see cref="DurableStore"/>'s: it is called under the model lock
/// (its catalog lock nests inside), and never changes the model; this class records what it returns.
/// </summary>
internal sealed class ContainerRegistry(BrokerModel model, BrokerOptions options, SegmentPlacement placement, LockRepair repair, DurableStore? durable, ReplicationService? replication, ILogger logger)
{
    private const long MaxObjectSize = 1L << 40; // 1 TiB: beyond any memory this broker can hand out

    /// <summary>Told (outside the model lock) of every object a replica creates: the name's waiters return.</summary>
    public Action<uint, string>? ObjectCreatedByReplica { get; set; }

    // ---- Containers ---------------------------------------------------------------------------------------

    public (ContainerInfo Info, Membership Member) CreateContainer(ClientSession session, ContainerCreate req)
    {
        AccessPolicy.ValidateName(req.Name, "container");
        var who = session.Credentials;
        AccessPolicy.CheckCreate(who, req.GroupId);
        int blockSize = req.BlockSize == 0 ? options.DefaultBlockSize : (int)Math.Min(req.BlockSize, int.MaxValue);
        if (req.BlockSize != 0 && (req.BlockSize < 4096 || req.BlockSize > (1u << 30) || (req.BlockSize & (req.BlockSize - 1)) != 0))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"block size {req.BlockSize} must be a power of two from 4 KiB to 1 GiB");
        }

        if (req.MaxMembers > BlockLockDescriptor.MaxMembersLimit)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"max members {req.MaxMembers} is above the limit of {BlockLockDescriptor.MaxMembersLimit}");
        }

        int maxMembers = req.MaxMembers == 0 ? BlockLockDescriptor.DefaultMaxMembers : (int)req.MaxMembers;
        if (req.Replication is not null)
        {
            return CreateReplicated(session, req, blockSize, maxMembers);
        }

        using (model.Enter())
        {
            if (model.Contains(req.Name))
            {
                throw new BrokerError(ErrorCode.AlreadyExists, $"container '{req.Name}' already exists");
            }

            var c = model.NewContainer(req.Name, req.GroupId, who.Uid, req.WritePolicy, blockSize, maxMembers);
            if (req.DurablePath.Length > 0)
            {
                c.Durable = durable!.CreateContainer(c, req.DurablePath, who);
            }

            model.Add(c);
            var m = AddMember(session, c);
            return (c.Describe(m), m);
        }
    }

    /// <summary>
    /// A replicated container (docs/ARCHITECTURE.md §14). NATS is talked to before the model lock: as the owner, the
    /// stream, bucket, lease and catalog entry (<see cref="ReplicationService.PrepareOwner"/>); as a replica, the
    /// catalog entry (whose block size, group, write policy and max members the replica takes) and the consumer. Then
    /// the container enters the model as any other, and the publisher or the consumer starts.
    /// </summary>
    private (ContainerInfo Info, Membership Member) CreateReplicated(ClientSession session, ContainerCreate req, int blockSize, int maxMembers)
    {
        var who = session.Credentials;
        if (req.DurablePath.Length > 0)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, "a container is durable or replicated, not both");
        }

        var spec = replication!.Resolve(req.Replication, who);
        using (model.Enter())
        {
            if (model.Contains(req.Name))
            {
                throw new BrokerError(ErrorCode.AlreadyExists, $"container '{req.Name}' already exists");
            }
        }

        if (spec.Replica && spec.TakeOver)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, "replication: a replica or a takeover, not both");
        }

        if (spec.TakeOver)
        {
            return TakeOver(session, spec, req.Name);
        }

        if (spec.Replica)
        {
            var (meta, link) = replication.ReadCatalog(spec, req.Name);
            if (meta.BlockSize < 4096 || meta.BlockSize > (1u << 30) || (meta.BlockSize & (meta.BlockSize - 1)) != 0
                || meta.MaxMembers is 0 or > BlockLockDescriptor.MaxMembersLimit || meta.Name != req.Name)
            {
                throw new BrokerError(ErrorCode.IoError, $"replication: the catalog entry of '{req.Name}' is not valid");
            }

            AccessPolicy.CheckCreate(who, meta.GroupId); // the replica is shared with the owner's group: the caller must be in it

            ContainerState? created = null;
            var follower = replication.PrepareReplica(spec, link, req.Name, (int)meta.BlockSize,
                (name, size) => AddReplicaObject(created!, name, size), name => ObjectCreatedByReplica?.Invoke(created!.Id, name),
                o => DestroyReplicaObject(created!, o), () => DestroyReplicaContainer(created!));
            (ContainerInfo, Membership) result;
            using (model.Enter())
            {
                if (model.Contains(req.Name))
                {
                    follower.Dispose();
                    throw new BrokerError(ErrorCode.AlreadyExists, $"container '{req.Name}' already exists");
                }

                created = model.NewContainer(req.Name, meta.GroupId, who.Uid, meta.WritePolicy, (int)meta.BlockSize, (int)meta.MaxMembers);
                created.ReplicationReplica = follower;
                model.Add(created);
                var m = AddMember(session, created);
                result = (created.Describe(m), m);
            }

            replication.StartReplica(follower);
            return result;
        }

        var owner = replication.PrepareOwner(spec, new ReplicaContainerMeta
        {
            Name = req.Name,
            GroupId = req.GroupId,
            WritePolicy = req.WritePolicy,
            BlockSize = (uint)blockSize,
            MaxMembers = (uint)maxMembers,
        });
        using (model.Enter())
        {
            if (model.Contains(req.Name))
            {
                replication.Abandon(owner);
                throw new BrokerError(ErrorCode.AlreadyExists, $"container '{req.Name}' already exists");
            }

            var c = model.NewContainer(req.Name, req.GroupId, who.Uid, req.WritePolicy, blockSize, maxMembers);
            c.ReplicationOwner = owner;
            model.Add(c);
            var m = AddMember(session, c);
            replication.StartOwner(owner);
            return (c.Describe(m), m);
        }
    }

    /// <summary>
    /// Failover (docs/ARCHITECTURE.md §14, "Failover"): this broker takes the ownership of a replicated container whose
    /// owner stopped refreshing its lease. The lease is taken first (<see cref="ReplicationService.TakeLease"/>: 1.5
    /// lease times of watching it unchanged, then a revision-checked update: the new epoch), then the container is made
    /// as a replica would make it and filled from the stream up to its tail (<see cref="ReplicaFollower.CatchUp"/>:
    /// every block the old owner published), with its members read-only meanwhile; then, under the model lock, the
    /// follower's objects pass to a <see cref="ReplicatedOwner"/> of the new epoch (same incarnations, object versions
    /// raised to the highest block version read) and the caller joins it, writable. If reading the stream fails the
    /// container goes (the lease, never refreshed, expires again).
    /// </summary>
    private (ContainerInfo Info, Membership Member) TakeOver(ClientSession session, Protocol.Replication spec, string name)
    {
        var who = session.Credentials;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (meta, link) = replication!.ReadCatalog(spec, name);
        if (meta.BlockSize < 4096 || meta.BlockSize > (1u << 30) || (meta.BlockSize & (meta.BlockSize - 1)) != 0
            || meta.MaxMembers is 0 or > BlockLockDescriptor.MaxMembersLimit || meta.Name != name)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: the catalog entry of '{name}' is not valid");
        }

        AccessPolicy.CheckCreate(who, meta.GroupId); // the owner's group: the caller must be in it
        long readMs = clock.ElapsedMilliseconds;
        var (owner, blockSize, waitMs, takeMs) = replication.TakeLease(spec, link, meta, CancellationToken.None);
        long streamFrom = clock.ElapsedMilliseconds;
        ContainerState? created = null;
        ReplicaFollower follower;
        try
        {
            // A container tombstone read here makes CatchUp fail (NotFound): the catch below frees the container.
            follower = replication.PrepareReplica(spec, link, name, blockSize,
                (n, size) => AddReplicaObject(created!, n, size), n => ObjectCreatedByReplica?.Invoke(created!.Id, n),
                o => DestroyReplicaObject(created!, o), static () => { });
        }
        catch (BrokerError)
        {
            owner.Dispose();
            throw;
        }

        using (model.Enter())
        {
            if (model.Contains(name))
            {
                follower.Dispose();
                owner.Dispose();
                throw new BrokerError(ErrorCode.AlreadyExists, $"container '{name}' already exists");
            }

            created = model.NewContainer(name, meta.GroupId, who.Uid, meta.WritePolicy, blockSize, (int)meta.MaxMembers);
            created.ReplicationReplica = follower; // read-only for anyone who joins while the stream is read
            model.Add(created);
        }

        try
        {
            follower.CatchUp(TakeOverReadTimeout);
        }
        catch (BrokerError)
        {
            using (model.Enter())
            {
                DestroyWhenUnused(created);
            }

            follower.Dispose();
            owner.Dispose();
            throw;
        }

        using (model.Enter())
        {
            var objects = follower.Detach();
            created.ReplicationReplica = null;
            created.ReplicationOwner = owner;
            foreach (var (state, incarnation, applied) in objects)
            {
                owner.AddObject(state, blockSize, incarnation, applied);
            }

            var m = AddMember(session, created);
            replication.StartOwner(owner);
            replication.CountFailover(); // the broker meter's sharedstore.broker.replication.failovers
            Log.ReplicationTakenOver(logger, name, owner.Epoch, objects.Count, readMs, waitMs, takeMs, clock.ElapsedMilliseconds - streamFrom);
            return (created.Describe(m), m);
        }
    }

    /// <summary>How long a takeover may take to read the stream's state of the container.</summary>
    private static readonly TimeSpan TakeOverReadTimeout = TimeSpan.FromMinutes(2);

    /// <summary>A replica's object, made when its first message arrives (the follower's loop, holding none of its
    /// locks): allocated as a create would, with no member's use; null when the container is gone or being destroyed,
    /// or the memory is not there (logged by the caller's rejection).</summary>
    private ObjectState? AddReplicaObject(ContainerState c, string name, long size)
    {
        if (size <= 0 || size > MaxObjectSize)
        {
            return null;
        }

        ObjectState o;
        using (model.Enter())
        {
            if (!model.IsLive(c) || c.Destroying)
            {
                return null;
            }

            if (c.Objects.TryGetValue(name, out var existing))
            {
                if (!existing.Destroying)
                {
                    return existing;
                }

                // An older incarnation destroyed on the owner that local members still use: it keeps its memory
                // until their last use ends (then FreeObject), nameless; the name is the new incarnation's.
                c.Objects.Remove(name);
            }

            try
            {
                o = placement.AllocateObject(c, name, size, c.CreatorUid);
            }
            catch (BrokerError e)
            {
                Log.ReplicationFailed(logger, c.Name, $"object '{name}' of {size} bytes not created: {e.Message}");
                return null;
            }
        }

        if (o.FreshPages)
        {
            PopulateBeforeReply(o.Segment.DataMap, o.DataOffset, size);
        }

        return o;
    }

    /// <summary>
    /// A replica's object that the owner destroyed (its tombstone, or a newer incarnation of the name, came through the
    /// stream; docs/ARCHITECTURE.md §14.2), as a local object_destroy does it: joins are refused from now on
    /// (<c>Destroyed</c>), and the memory is freed once no member uses it (now, or at the last leave: members that
    /// have it joined keep reading the last state until they leave). Unlike a local destroy nothing waits and nothing
    /// is put back: the owner's destroy has happened. Called by the follower's loop holding none of its locks.
    /// </summary>
    private void DestroyReplicaObject(ContainerState c, ObjectState o)
    {
        using (model.Enter())
        {
            if (!model.IsLive(c) || !c.ObjectsById.ContainsKey(o.Id) || o.Destroying)
            {
                return;
            }

            o.Destroying = true;
            if (o.UseCount == 0)
            {
                FreeObject(c, o);
            }

            model.PulseAll();
        }
    }

    /// <summary>
    /// A replica container whose owner destroyed it (its tombstone came through the stream): as a local container
    /// destroy, joins are refused from now on (<c>Destroyed</c>) and the container is freed once its last member has
    /// left (now if it has none). Nothing waits and nothing is put back. A local destroy already under way is left to
    /// run. Called by the follower's loop holding none of its locks; the follower stops after it.
    /// </summary>
    private void DestroyReplicaContainer(ContainerState c)
    {
        using (model.Enter())
        {
            if (!model.IsLive(c) || c.Destroying)
            {
                return;
            }

            DestroyWhenUnused(c);
            model.PulseAll();
        }
    }

    /// <summary>Under the model lock: a destroy that waits for no one (the owner's, or a failed takeover's): joins are
    /// refused from now on, and the container is freed now or at its last member's leave.</summary>
    private void DestroyWhenUnused(ContainerState c)
    {
        c.Destroying = true;
        if (c.MemberCount == 0)
        {
            FreeContainer(c);
        }
    }

    public (ContainerInfo Info, Membership Member) JoinContainer(ClientSession session, ContainerJoin req)
    {
        AccessPolicy.ValidateName(req.Name, "container");
        using (model.Enter())
        {
            if (!model.TryGet(req.Name, out var c))
            {
                throw new BrokerError(ErrorCode.NotFound, $"container '{req.Name}' does not exist");
            }

            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{req.Name}' is being destroyed");
            }

            AccessPolicy.CheckJoin(session.Credentials, c);
            var m = AddMember(session, c);
            return (c.Describe(m), m);
        }
    }

    private Membership AddMember(ClientSession session, ContainerState c)
    {
        // One membership (one lock slot) per client process and container: a second join would need a second slot
        // for the same process, and must be refused before anything is recorded.
        if (model.IsMember(session, c.Id))
        {
            throw new BrokerError(ErrorCode.AlreadyExists, $"this client is already a member of container '{c.Name}'");
        }

        int slot = Array.IndexOf(c.Slots, null); // slots 0 … MaxMembers − 1; the broker's is beyond them
        if (slot < 0)
        {
            throw new BrokerError(ErrorCode.NoResources, $"container '{c.Name}' has its maximum of {c.MaxMembers} member processes (chosen at create time)");
        }

        // A free slot's words may have been forged while it was free (docs/ARCHITECTURE.md §2): clear them before the
        // slot is given, so a new member never inherits a forgery as its own (unrepairable) hold.
        repair.ClearFreeSlot(c, slot, session.Credentials.Pid);
        var m = new Membership { Session = session, Container = c, Slot = slot, CanWrite = AccessPolicy.CanWrite(c, session.Credentials) };
        c.Slots[slot] = m;
        model.AddMembership(m);
        return m;
    }

    public void LeaveContainer(ClientSession session, uint containerId)
    {
        using (model.Enter())
        {
            var m = model.Member(session, containerId);
            RemoveMember(m, died: false);
        }
    }

    /// <summary>Blocks until every other member has left, then frees the container. Joins are refused from the start.
    /// On timeout or cancellation the container is put back as it was.</summary>
    public void DestroyContainer(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token)
    {
        using (model.Enter())
        {
            var m = model.Member(session, containerId);
            var c = m.Container;
            AccessPolicy.CheckDestroy(session.Credentials, c);
            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{c.Name}' is already being destroyed");
            }

            c.Destroying = true;
            bool done = model.WaitUntil(() => c.MemberCount == (c.Slots[m.Slot] == m ? 1 : 0), timeout, token);
            // Put the container back whenever it still exists, also when the destroyer left or died while waiting
            // (its session close cancels the wait): otherwise it would stay "destroying" with live members.
            if (!done && model.IsLive(c))
            {
                c.Destroying = false;
                model.PulseAll();
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

    /// <summary>Under the model lock: takes a member out of its container (it left, or its process died), releasing
    /// what its slot held. Returns the records in which the slot held something.</summary>
    public long RemoveMember(Membership m, bool died)
    {
        var c = m.Container;
        // Release everything the slot may hold in every block of the container. For a live client that left, its
        // library refused to leave with leases or writes outstanding, so this finds nothing; for a dead one it is
        // the recovery (see docs/ARCHITECTURE.md, "Recovery"). The same pass clears whatever names a slot with no
        // live member (forged, §2): a leave or death is when such words most often lose their last excuse.
        long released = repair.ScrubSlot(c, m.Slot, died ? "death" : "leave", m.Session.Credentials.Pid);
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
        model.RemoveMembership(m);
        if (died && released > 0)
        {
            Log.DeadClientRecovered(logger, released, m.Session.Credentials.Pid, c.Name);
        }

        if (c.Destroying && c.MemberCount == 0)
        {
            FreeContainer(c);
        }

        model.PulseAll();
        return released;
    }

    private void FreeContainer(ContainerState c)
    {
        c.ReplicationReplica?.Close(); // an apply waiting for a block lock gives up; the objects' removals wait for applies

        // The owner first: its container tombstone and purge (in the background) cover the objects, which then publish
        // no tombstones of their own (docs/ARCHITECTURE.md §14.2).
        c.ReplicationOwner?.Close(purge: true);
        foreach (var o in c.ObjectsById.Values.ToList())
        {
            FreeObject(c, o);
        }

        if (c.Durable is { } dc)
        {
            durable!.RemoveContainer(dc); // destroy of a durable container deletes its files
        }

        replication?.Forget(c.ReplicationOwner, c.ReplicationReplica);
        placement.FreeSegments(c);
        model.RemoveContainer(c);
    }

    // ---- Objects ------------------------------------------------------------------------------------------

    public (ObjectInfo Info, SegmentGrant Grant) CreateObject(ClientSession session, ObjectCreate req)
    {
        AccessPolicy.ValidateName(req.Name, "object");
        if (req.Size == 0 || req.Size > MaxObjectSize)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"object size {req.Size} must be from 1 byte to 1 TiB");
        }

        long size = (long)req.Size;
        ObjectState o;
        Membership m;
        using (model.Enter())
        {
            m = model.Member(session, req.ContainerId);
            var c = m.Container;
            AccessPolicy.CheckWriter(m, "create");
            if (c.Destroying)
            {
                throw new BrokerError(ErrorCode.Destroyed, $"container '{c.Name}' is being destroyed");
            }

            if (c.Objects.ContainsKey(req.Name))
            {
                throw new BrokerError(ErrorCode.AlreadyExists, $"object '{req.Name}' already exists in container '{c.Name}'");
            }

            o = placement.AllocateObject(c, req.Name, size, session.Credentials.Uid);
            o.UseCount = 1;
            if (c.Durable is { } dc)
            {
                try
                {
                    o.Durable = durable!.AddObject(dc, o); // the file, preallocated: a full disk is this call's NoResources
                }
                catch (BrokerError)
                {
                    o.UseCount = 0;
                    FreeObject(c, o);
                    throw;
                }
            }

            c.ReplicationOwner?.AddObject(o, c.BlockSize); // announced and published by its next pass
            m.ObjectUses[o.Id] = 1;
        }

        // The broker's own page tables, before the reply: the first population of a page also zeroes it (about 1 µs a
        // page; a page fault costs 10-20 µs on this machine kind), and the creator's population then only maps
        // (docs/ARCHITECTURE.md §7). Nothing is left running behind the reply: a population in the background (as
        // before issue 16) outlived the creator's use, so it could run on after the object was destroyed, allocating
        // freed pages again, or after the segment was unmapped. Here the creator's use (its session, this thread)
        // keeps the object and its mapping alive until the population ends.
        if (o.FreshPages)
        {
            PopulateBeforeReply(o.Segment.DataMap, o.DataOffset, size);
        }

        using (model.Enter())
        {
            return (o.Describe(), Grant(m, o));
        }
    }

    /// <summary>Populates [offset, offset+size) of the broker's mapping now: large ranges on two threads (their two
    /// halves), since the zeroing of fresh pages is most of a large create and the machine has more than one core.</summary>
    private void PopulateBeforeReply(MappedRegion map, long offset, long size)
    {
        if (size < options.ParallelPopulateThreshold || Environment.ProcessorCount < 2)
        {
            map.Populate(offset, size);
            return;
        }

        long half = ((size / 2) + 4095) & ~4095L;
        var second = Task.Run(() => map.Populate(offset + half, size - half));
        map.Populate(offset, half);
        second.Wait();
    }

    public (ObjectInfo Info, SegmentGrant Grant) JoinObject(ClientSession session, ObjectJoin req)
    {
        AccessPolicy.ValidateName(req.Name, "object");
        using (model.Enter())
        {
            var m = model.Member(session, req.ContainerId);
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
            return (o.Describe(), Grant(m, o));
        }
    }

    public void LeaveObject(ClientSession session, ObjectLeave req)
    {
        using (model.Enter())
        {
            var m = model.Member(session, req.ContainerId);
            var o = BrokerModel.Object(m, req.ObjectId);
            DropUse(m, o);
            model.PulseAll();
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

    /// <summary>object_destroy without waiting, for the session thread: frees the object and returns true when no
    /// other member uses it (the common case), returns false having changed nothing when one does (the caller then
    /// runs <see cref="DestroyObject"/> on the pool, which waits). Saves a thread hop per destroy.</summary>
    /// <exception cref="BrokerError">As <see cref="DestroyObject"/>, but never Timeout or Canceled.</exception>
    public bool TryDestroyObjectNow(ClientSession session, ObjectDestroy req)
    {
        using (model.Enter())
        {
            var (m, o) = DestroyTarget(session, req);

            int mine = m.ObjectUses.GetValueOrDefault(o.Id);
            if (o.UseCount - mine != 0)
            {
                return false;
            }

            o.UseCount -= mine;
            m.ObjectUses.Remove(o.Id);
            FreeObject(m.Container, o);
            model.PulseAll();
            return true;
        }
    }

    /// <summary>Under the model lock: the membership and object an object_destroy names, once the caller may destroy
    /// it and no destroy of it is under way.</summary>
    private (Membership M, ObjectState O) DestroyTarget(ClientSession session, ObjectDestroy req)
    {
        var m = model.Member(session, req.ContainerId);
        var o = BrokerModel.Object(m, req.ObjectId);
        AccessPolicy.CheckWriter(m, "destroy");
        if (o.Destroying)
        {
            throw new BrokerError(ErrorCode.Destroyed, $"object '{o.Name}' is already being destroyed");
        }

        return (m, o);
    }

    /// <summary>Blocks while other members use the object, then frees it. Joins are refused from the start. On
    /// timeout or cancellation the object is put back as it was.</summary>
    public void DestroyObject(ClientSession session, ObjectDestroy req, TimeSpan timeout, CancellationToken token)
    {
        using (model.Enter())
        {
            var (m, o) = DestroyTarget(session, req);

            o.Destroying = true;
            int Mine() => m.ObjectUses.GetValueOrDefault(o.Id);
            bool done = model.WaitUntil(() => o.UseCount - Mine() == 0, timeout, token);
            // Put the object back whenever it still exists, also when the destroyer's membership is gone (it left
            // the container or died while waiting): others still use it, so it must not be freed below.
            if (!done && m.Container.ObjectsById.ContainsKey(o.Id))
            {
                o.Destroying = false;
                model.PulseAll();
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

            model.PulseAll();
        }
    }

    private void FreeObject(ContainerState c, ObjectState o)
    {
        if (!c.ObjectsById.Remove(o.Id))
        {
            return;
        }

        if (c.Durable is { } dc && o.Durable is { } d)
        {
            durable!.RemoveObject(dc, d); // write-back stops touching the memory before it is freed
            o.Durable = null;
        }

        c.ReplicationOwner?.RemoveObject(o, purge: true); // a pass that holds it ends first; its messages are purged
        c.ReplicationReplica?.RemoveObject(o);             // an apply that holds it ends first
        o.AsyncTarget?.Dispose(); // its view's reference on the mappings: appliers dropped it before a leave or destroy
        o.AsyncTarget = null;
        if (c.Objects.TryGetValue(o.Name, out var named) && named == o)
        {
            c.Objects.Remove(o.Name); // a replica's new incarnation may hold the name already (DestroyReplicaObject)
        }

        c.Bytes -= o.Size;
        foreach (var member in c.Members)
        {
            member.ObjectUses.Remove(o.Id);
        }

        placement.FreeObject(c, o);
    }

    /// <summary>Under the model lock: the segments this member has not received yet. The session releases the
    /// references (<see cref="SegmentGrant.Add"/>) after sending.</summary>
    private static SegmentGrant Grant(Membership m, ObjectState o)
    {
        var grant = new SegmentGrant();
        if (m.SentSegments.Add(o.Segment.Id))
        {
            grant.Add(m, o.Segment);
        }

        return grant;
    }

    /// <summary>A segment's descriptors again, for a member whose client lost the reply that carried them.</summary>
    public SegmentGrant FetchSegment(ClientSession session, SegmentFetch req)
    {
        using (model.Enter())
        {
            var m = model.Member(session, req.ContainerId);
            var seg = m.Container.Segments.Find(s => s.Id == req.SegmentId)
                ?? throw new BrokerError(ErrorCode.NotFound, $"container '{m.Container.Name}' has no segment {req.SegmentId}");
            var grant = new SegmentGrant();
            m.SentSegments.Add(seg.Id);
            grant.Add(m, seg);
            return grant;
        }
    }

    /// <summary>Whether the session is a member of at least one container.</summary>
    public bool IsMember(ClientSession session)
    {
        using (model.Enter())
        {
            return model.MembershipsOf(session).Count > 0;
        }
    }

    /// <summary>name_wait's check: whether the container (<see cref="NameWait.ContainerId"/> 0) or object named by
    /// <paramref name="req"/> exists and is not being destroyed. Takes the model lock; called by
    /// <see cref="NameWaiters"/> outside its own lock (see its class comment).</summary>
    /// <exception cref="BrokerError">InvalidArgument (a bad name); NotFound (an object wait by a non-member of the
    /// container).</exception>
    public bool NameExists(ClientSession session, NameWait req)
    {
        AccessPolicy.ValidateName(req.Name, req.ContainerId == 0 ? "container" : "object");
        using (model.Enter())
        {
            if (req.ContainerId == 0)
            {
                return model.TryGet(req.Name, out var c) && !c.Destroying;
            }

            var m = model.Member(session, req.ContainerId);
            return m.Container.Objects.TryGetValue(req.Name, out var o) && !o.Destroying;
        }
    }

    /// <summary>The name of the container <paramref name="containerId"/> (<paramref name="objectId"/> null) or of one
    /// of its objects, for a member; null when there is none. Lets a destroy that was put back tell the name's
    /// waiters (<see cref="BrokerState.DestroyContainer"/>).</summary>
    public string? NameOf(ClientSession session, uint containerId, uint? objectId)
    {
        using (model.Enter())
        {
            if (!model.IsMember(session, containerId))
            {
                return null;
            }

            var c = model.Member(session, containerId).Container;
            return objectId is not { } id ? c.Name : c.ObjectsById.TryGetValue(id, out var o) ? o.Name : null;
        }
    }

    // ---- Durable containers ---------------------------------------------------------------------------------

    /// <summary>container_flush: every write that completed before it is on disk when it returns.</summary>
    public void Flush(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token)
    {
        DurableContainer? dc;
        ReplicatedOwner? owner;
        using (model.Enter())
        {
            var c = model.Member(session, containerId).Container;
            dc = c.Durable;
            owner = c.ReplicationOwner;
        }

        if (dc is not null)
        {
            durable!.Flush(dc, timeout, token);
        }

        owner?.Flush(timeout, token); // every write completed before it is acknowledged by the stream
    }

    /// <summary>Broker start: brings back every registered durable container with its objects (memory allocated as
    /// for a create, blocks loaded from their files). A container that cannot be read is logged and skipped.</summary>
    public List<RestoreReport> RestoreDurable()
    {
        var reports = new List<RestoreReport>();
        foreach (string dir in durable!.RegisteredDirectories())
        {
            ContainerState? c = null;
            DurableContainer? dc = null;
            try
            {
                dc = durable.OpenRegistered(dir); // the folder opened O_NOFOLLOW and checked again
                var meta = dc.Meta;
                var objects = new List<(ObjectState O, string File)>();
                using (model.Enter())
                {
                    if (model.Contains(meta.Name))
                    {
                        throw new InvalidDataException($"a container named '{meta.Name}' exists already");
                    }

                    c = model.NewContainer(meta.Name, meta.GroupId, meta.CreatorUid, meta.WritePolicy, (int)meta.BlockSize,
                        meta.MaxMembers is > 0 and <= BlockLockDescriptor.MaxMembersLimit ? (int)meta.MaxMembers : BlockLockDescriptor.DefaultMaxMembers);
                    durable.AdoptContainer(dc);
                    c.Durable = dc;
                    model.Add(c);
                    foreach (var om in meta.Objects)
                    {
                        objects.Add((placement.AllocateObject(c, om.Name, (long)om.Size, c.CreatorUid, reserve: false), om.File)); // RestoreObject reserves
                    }
                }

                foreach (var (o, file) in objects)
                {
                    var report = durable.RestoreObject(dc, o, file, out var d);
                    using (model.Enter())
                    {
                        o.Durable = d;
                    }

                    Log.DurableRestored(logger, report.Container, report.Object, report.Blocks, report.TornSlots, report.CorruptBlocks);
                    reports.Add(report);
                }
            }
            catch (Exception e) when (e is IOException or InvalidDataException or InvalidProtocolBufferException or SharedStoreException or UnauthorizedAccessException)
            {
                Log.DurableRestoreFailed(logger, dir, e.Message);

                // All or nothing: a container whose object file failed (a damaged header) was already listed with
                // its objects allocated, and clients would have been served the failed object (and every later one)
                // as zeros, unmarked. Take it out again; its files stay untouched and registered.
                durable.AbandonRestore(dir, dc);
                if (c is not null)
                {
                    using (model.Enter())
                    {
                        foreach (var o in c.ObjectsById.Values)
                        {
                            o.Durable = null; // closed by AbandonRestore
                        }

                        c.Durable = null; // FreeContainer must not delete the files
                        FreeContainer(c);
                    }
                }
            }
        }

        return reports;
    }

    // ---- Asynchronous path ---------------------------------------------------------------------------------

    /// <summary>Resolves the object an asynchronous message names, as <paramref name="session"/> may use it: it must
    /// be a member of the container and have the object joined. The target stays valid while the session keeps the
    /// object joined; the session's applier drops its cached targets before any leave or destroy is executed.</summary>
    public unsafe ErrorCode ResolveAsync(ClientSession session, uint containerId, uint objectId, out AsyncTarget? target, out bool canWrite)
    {
        target = null;
        canWrite = false;
        using (model.Enter())
        {
            if (model.Disposed)
            {
                return ErrorCode.BrokerUnavailable;
            }

            if (!model.MembershipsOf(session).TryGetValue(containerId, out var m) || !m.ObjectUses.ContainsKey(objectId)
                || !m.Container.ObjectsById.TryGetValue(objectId, out var o))
            {
                return ErrorCode.NotFound;
            }

            canWrite = m.CanWrite;
            target = o.AsyncTarget ??= new AsyncTarget(o.Segment.BrokerView(o, m.Container.BlockSize,
                durable: m.Container.TracksDirtyBlocks, repair.RequesterFor(m.Container, o)));
            return ErrorCode.Ok;
        }
    }
}
