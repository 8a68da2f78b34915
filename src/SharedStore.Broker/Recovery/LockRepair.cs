using Microsoft.Extensions.Logging;
using SharedStore.Locks;
using SharedStore.Regions;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// What the broker does to lock records (docs/ARCHITECTURE.md §5, "Recovery" and "Repair"): releases a slot whose
/// process left or died, clears what names no live member (forged words), answers lock_check, and wakes every
/// sleeper at shutdown. Every method runs under the model lock (the caller's, or its own for the entry points).
/// </summary>
internal sealed class LockRepair(BrokerModel model, ILogger logger)
{
    /// <summary>Under the model lock: releases <paramref name="slot"/> (whose process left or died) in every block of
    /// the container, and in the same pass clears what names no live member in each record (the slot counts as
    /// memberless). Returns the records in which the slot itself held something.</summary>
    public unsafe long ScrubSlot(ContainerState c, int slot, string occasion, int pid)
    {
        long released = 0, repaired = 0;
        var what = default(RepairResult);
        var live = c.LiveSlots();
        live.Remove(slot);
        c.ForEachRecord((o, b, rec) =>
        {
            if (BlockLock.ScrubSlot(rec, slot).Any)
            {
                released++;
            }

            var r = o.Ledger.ClearUnowned(rec, b, c.Lines, live);
            if (r.Any)
            {
                repaired++;
                what.Add(r);
            }
        });

        if (repaired > 0)
        {
            Log.LockStateRepaired(logger, repaired, c.Name, what.ToString(), $"{occasion} of pid {pid}");
        }

        return released;
    }

    /// <summary>Under the model lock, before free slot <paramref name="slot"/> is given to a member: clears its reader
    /// byte, an Owner naming it (or no slot) and its Waiting bit in every block of the container. Nobody holds anything
    /// with a free slot, so whatever is there was forged (or left by a process that left mid-call: misuse).</summary>
    public unsafe void ClearFreeSlot(ContainerState c, int slot, int pid)
    {
        long repaired = 0;
        var what = default(RepairResult);
        var others = new SlotSet(Enumerable.Range(0, c.Lines * BlockLockDescriptor.SlotsPerLine).Where(s => s != slot));
        var claims = new SlotClaims { LiveSlots = others, BrokerSlot = c.BrokerSlot }; // every other slot, the broker's too, as it is
        c.ForEachRecord((o, b, rec) =>
        {
            var r = BlockLock.ClearUnowned(rec, c.Lines, claims);
            if (r.Any)
            {
                repaired++;
                what.Add(r);
            }
        });

        if (repaired > 0)
        {
            Log.LockStateRepaired(logger, repaired, c.Name, what.ToString(), $"join of pid {pid} (slot {slot})");
        }
    }

    /// <summary>Under the model lock: clears what names no live member in one record of <paramref name="o"/>.</summary>
    private unsafe RepairResult RepairRecord(ContainerState c, ObjectState o, long block, string occasion)
    {
        var r = o.Ledger.ClearUnowned(o.Segment.Record(o.RecordIndex + block), block, c.Lines, c.LiveSlots());
        if (r.Any)
        {
            Log.LockStateRepaired(logger, 1, c.Name, r.ToString(), $"{occasion} ('{o.Name}' block {block})");
        }

        return r;
    }

    /// <summary>lock_check: a member that has waited long on a block asks for its record to be checked; what names no
    /// live member is cleared and sleepers are woken (docs/ARCHITECTURE.md §5, "Repair").</summary>
    public LockCheckReply CheckLock(ClientSession session, LockCheck req)
    {
        using (model.Enter())
        {
            if (model.Disposed)
            {
                throw new BrokerError(ErrorCode.BrokerUnavailable, "the broker is stopping");
            }

            var m = model.Member(session, req.ContainerId);
            var o = BrokerModel.Object(m, req.ObjectId);
            if (req.Block >= (ulong)o.BlockCount)
            {
                throw new BrokerError(ErrorCode.InvalidArgument, $"object '{o.Name}' has {o.BlockCount} block(s), not block {req.Block}");
            }

            var r = RepairRecord(m.Container, o, (long)req.Block, $"check asked by pid {session.Credentials.Pid}");
            var reply = new LockCheckReply { Owner = r.Owner, WaitingLines = r.WaitingLines };
            reply.ReaderSlots.AddRange((r.ReaderSlots?.Slots ?? []).Select(s => (uint)s));
            reply.WaitingSlots.AddRange((r.WaitingSlots?.Slots ?? []).Select(s => (uint)s));
            return reply;
        }
    }

    /// <summary>The same check for the broker's own lock waits (an applier waited long on a block): called by the
    /// object's <see cref="AsyncTarget.Repair"/>. Does nothing once the object is gone.</summary>
    private unsafe void CheckLockForBroker(ContainerState c, ObjectState o, BlockLockRecord* rec)
    {
        using (model.Enter())
        {
            if (model.Disposed || !c.ObjectsById.TryGetValue(o.Id, out var still) || still != o)
            {
                return;
            }

            long block = ((byte*)rec - (byte*)o.Segment.Record(o.RecordIndex)) / o.Segment.RecordSize;
            if (block >= 0 && block < o.BlockCount)
            {
                RepairRecord(c, o, block, "check by an applier of the broker");
            }
        }
    }

    /// <summary>The repair requester of the broker's own lock waits on one object.</summary>
    public ILockRepairRequester RequesterFor(ContainerState c, ObjectState o) => new BrokerCheck(this, c, o);

    private sealed unsafe class BrokerCheck(LockRepair repair, ContainerState c, ObjectState o) : ILockRepairRequester
    {
        public void RequestCheck(BlockLockRecord* rec) => repair.CheckLockForBroker(c, o, rec);
    }

    /// <summary>Wakes every lock sleeper of every container (shutdown: clients then notice the broker is gone).</summary>
    public unsafe void WakeAllSleepers()
    {
        using (model.Enter())
        {
            foreach (var c in model.Containers)
            {
                c.ForEachRecord((o, b, rec) => BlockLock.WakeAllSleepers(rec));
            }
        }
    }
}
