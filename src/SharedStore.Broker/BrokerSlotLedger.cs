using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// What the broker's own lock slot (<see cref="BlockLockDescriptor.BrokerSlot"/>, the last of the records; 63 below)
/// really holds on the blocks of one
/// object: the broker-side ledger that lets a repair tell a forged broker-slot word from a real one. Every member
/// maps the lock records read-write, so any of them can write slot 63's reader byte, an Owner of 64 or Waiting bit 63;
/// unlike a member's slot, whose words are trusted while the member lives, the broker knows its own threads, and this
/// ledger is that knowledge. The asynchronous appliers (writes and broker-path reads) and the durable write-back take
/// and release every broker-slot lock through it: their object views carry it (<see cref="ObjectView.Ledger"/>), and
/// <see cref="BlockRange"/> calls it for every block.
/// <para><b>What is recorded</b>, per block (three ints, allocated on first use: a dictionary of the few blocks in use
/// cost an allocation and two hash operations per lock and measurably slowed small asynchronous writes), changed under
/// <see cref="_gate"/> (which is also the broker slot's <c>waitGate</c> for
/// <see cref="BlockLock.AcquireWrite(BlockLockRecord*, int, object, ref int, ref LockWait, ref int)"/>) except where
/// noted:</para>
/// <list type="bullet">
/// <item><b>Reads</b>: broker threads acquiring or holding a read. Raised under the gate before the reader's CAS,
/// lowered (atomically, without the gate: a judgement that reads a count about to drop only leaves more) after its
/// release or after it gave up, so at every instant the broker's real contribution to byte 63, tentative increments
/// included, is at most Reads.</item>
/// <item><b>Owned</b>: 1 from the successful Owner CAS to the Owner store of the release. Both happen inside
/// <see cref="BlockLock"/> under the gate, with the flag set and reset in the same critical sections.</item>
/// <item><b>Waiters</b>: the slot's process-local waiter count, which BlockLock updates under the gate together with
/// Waiting bit 63 (0 → 1 sets the bit, 1 → 0 clears it).</item>
/// </list>
/// <para><b>The judgement</b> (<see cref="ClearUnowned"/>, under the gate): byte 63 is lowered to Reads, an Owner
/// naming slot 63 is cleared when Owned is 0, bit 63 is cleared when Waiters is 0. Since Reads only grows under the
/// gate, Owned is set only under it, and Waiters with bit 63 only change under it, none of these can become true
/// while the judgement runs; what it clears is therefore held by no broker thread. A repair may leave a forged excess
/// that coincides with a real hold (byte 63 at most Reads while a forged 1 and a waiting reader are both there): it is
/// cleared by the next check once the real hold is gone.</para>
/// </summary>
internal sealed unsafe class BrokerSlotLedger(long blockCount, int slot) : ISlotLedger
{
    private readonly int Slot = slot;
    private readonly object _gate = new();
    private readonly long _blockCount = blockCount;
    private int[]? _reads;   // per block: broker reads acquiring or held
    private int[]? _owned;   // per block: 1 from the Owner claim to the release store
    private int[]? _waiters; // per block: BlockLock's localWaiters of the broker slot

    /// <summary>Takes a write of block <paramref name="block"/> (record <paramref name="rec"/>) with the broker slot.
    /// On any outcome but Acquired nothing is held (BlockLock dropped what it had claimed, under the gate).</summary>
    public LockStatus AcquireWrite(BlockLockRecord* rec, long block, ref LockWait wait) =>
        BlockLock.AcquireWrite(rec, Slot, _gate, ref PerBlock(ref _waiters)[block], ref wait, ref PerBlock(ref _owned)[block]);

    /// <summary>Releases a write taken with <see cref="AcquireWrite"/>.</summary>
    public void ReleaseWrite(BlockLockRecord* rec, long block, bool wroteWholeBlock, bool markDirty) =>
        BlockLock.ReleaseWrite(rec, wroteWholeBlock, markDirty, _gate, ref PerBlock(ref _owned)[block]);

    /// <summary>Takes a read with the broker slot, waiting as long as <paramref name="wait"/> allows.</summary>
    public LockStatus AcquireRead(BlockLockRecord* rec, long block, ref LockWait wait)
    {
        ref int reads = ref EnterRead(block);
        LockStatus s = BlockLock.AcquireRead(rec, Slot, ref wait);
        if (s != LockStatus.Acquired)
        {
            Interlocked.Decrement(ref reads);
        }

        return s;
    }

    /// <summary>Takes a read with the broker slot if that needs no wait (the write-back never waits).</summary>
    public bool TryAcquireReadFast(BlockLockRecord* rec, long block)
    {
        ref int reads = ref EnterRead(block);
        if (!BlockLock.TryAcquireReadFast(rec, Slot))
        {
            Interlocked.Decrement(ref reads);
            return false;
        }

        return true;
    }

    /// <summary>Releases a read taken with <see cref="AcquireRead"/> or <see cref="TryAcquireReadFast"/>.</summary>
    public void ReleaseRead(BlockLockRecord* rec, long block)
    {
        BlockLock.ReleaseRead(rec, Slot); // the byte first: Reads must never be below the real contribution
        Interlocked.Decrement(ref PerBlock(ref _reads)[block]);
    }

    /// <summary>
    /// <see cref="BlockLock.ClearUnowned"/> of one record of this object: <paramref name="liveSlots"/> are the slots
    /// with a live member (the caller holds the broker's state lock, so none gains one meanwhile), and the broker
    /// slot is judged against this ledger under its gate. A record that names the broker slot nowhere is judged
    /// without the gate (there is nothing of slot 63 to clear; a word forged after the look is the next check's).
    /// </summary>
    public RepairResult ClearUnowned(BlockLockRecord* rec, long block, int lines, SlotSet liveSlots)
    {
        if (!BlockLock.NamesSlot(rec, Slot))
        {
            return BlockLock.ClearUnowned(rec, lines, new SlotClaims { LiveSlots = liveSlots, BrokerSlot = Slot, TrustBrokerSlot = true });
        }

        lock (_gate)
        {
            return BlockLock.ClearUnowned(rec, lines, new SlotClaims
            {
                LiveSlots = liveSlots, // member slots only: the broker's is beyond MaxMembers
                BrokerSlot = Slot,
                BrokerReads = _reads is { } r ? Volatile.Read(ref r[block]) : 0,
                BrokerOwns = _owned is { } o && o[block] != 0,
                BrokerWaits = _waiters is { } w && w[block] > 0,
            });
        }
    }

    private ref int EnterRead(long block)
    {
        ref int reads = ref PerBlock(ref _reads)[block];
        lock (_gate)
        {
            reads++; // under the gate: a judgement never sees the count rise (see the class comment)
        }

        return ref reads;
    }

    private int[] PerBlock(ref int[]? array) =>
        Volatile.Read(ref array) ?? LazyInitializer.EnsureInitialized(ref array, () => new int[_blockCount]);
}
