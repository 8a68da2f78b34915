using SharedStore.Locks;
using SharedStore.Regions;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// What the broker tells about itself: the figures of status and metrics, the list of containers, and who holds each
/// block of an object (holders, with process names from /proc). Reads the model under its lock; system calls (/proc)
/// are made after the lock is released.
/// </summary>
internal sealed class BrokerIntrospection(BrokerModel model, MemoryBudget memory)
{
    /// <summary>Figures for the observable instruments and the status request.</summary>
    public BrokerSnapshot Snapshot(int sessions)
    {
        using (model.Enter())
        {
            int objects = 0;
            long objectBytes = 0;
            foreach (var c in model.Containers)
            {
                objects += c.ObjectsById.Count;
                objectBytes += c.Bytes;
            }

            return new BrokerSnapshot(model.ContainerCount, objects, objectBytes, memory.InUse, sessions);
        }
    }

    public ListReply List()
    {
        var reply = new ListReply();
        using (model.Enter())
        {
            foreach (var c in model.Containers)
            {
                var e = new ContainerEntry { Info = c.Describe(null), Bytes = (ulong)c.Bytes, ReplicationLagMs = c.ReplicationReplica?.LagMs ?? 0 };
                e.MemberPids.AddRange(c.Members.Select(m => m.Session.Credentials.Pid));
                e.MemberSlots.AddRange(c.Members.Select(m => (uint)m.Slot));
                foreach (var o in c.ObjectsById.Values)
                {
                    e.Objects.Add(new ObjectEntry { Info = o.Describe(), UseCount = (uint)o.UseCount });
                }

                reply.Containers.Add(e);
            }
        }

        return reply;
    }

    /// <summary>Who holds or waits on each block of an object, read from the lock records the broker maps. Lists
    /// every block with a holder or a waiter (a reply of any size is sent in parts). The caller must be allowed to join
    /// the container. The records change under us: each block is a snapshot of its own words, not of the object.</summary>
    public unsafe HoldersReply Holders(ClientSession session, HoldersRequest req)
    {
        AccessPolicy.ValidateName(req.ContainerName, "container");
        AccessPolicy.ValidateName(req.ObjectName, "object");
        var reply = new HoldersReply();
        using (model.Enter())
        {
            if (!model.TryGet(req.ContainerName, out var c))
            {
                throw new BrokerError(ErrorCode.NotFound, $"container '{req.ContainerName}' does not exist");
            }

            AccessPolicy.CheckJoin(session.Credentials, c);
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
        var s = BlockLockSnapshot.Take(rec, c.Lines);
        if (s.Unheld)
        {
            return null;
        }

        var entry = new BlockHolders { Block = (ulong)block, Torn = s.Torn };
        foreach (int slot in s.ReaderSlots)
        {
            var h = Holder(c, slot);
            h.Count = (uint)s.ReadHolds(slot);
            entry.Readers.Add(h);
        }

        if (s.Owner != 0)
        {
            var h = Holder(c, s.OwnerSlot);
            h.Active = s.OwnerActive;
            h.Count = 1;
            entry.Writer = h;
        }

        foreach (int slot in s.WaitingSlots)
        {
            entry.Waiting.Add(Holder(c, slot));
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
}
