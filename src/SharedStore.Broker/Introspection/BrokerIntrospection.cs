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
                var e = new ContainerEntry { Info = c.Describe(null), Bytes = (ulong)c.Bytes };
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
}
