using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// What the broker's own lock slot (<see cref="BlockLockDescriptor.BrokerSlot"/>, 63) really holds on the blocks of one
/// object: the broker-side ledger that lets a repair tell a forged broker-slot word from a real one. Every member
/// maps the lock records read-write, so any of them can write slot 63's reader byte, an Owner of 64 or Waiting bit 63;
/// unlike a member's slot, whose words are trusted while the member lives, the broker knows its own threads, and this
/// ledger is that knowledge. The asynchronous appliers (writes and broker-path reads) and the durable write-back take
/// and release every broker-slot lock through it.
/// <para><b>What is recorded</b>, per block, under <see cref="_gate"/> (which is also the broker slot's
/// <c>waitGate</c> for <see cref="BlockLock.AcquireWrite(BlockLockRecord*, int, object, ref int, ref LockWait, ref int)"/>):</para>
/// <list type="bullet">
/// <item><b>Reads</b>: broker threads acquiring or holding a read. Raised before the reader's CAS, lowered after its
/// release (or after it gave up), so at every instant the broker's real contribution to byte 63, tentative
/// increments included, is at most Reads.</item>
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
internal sealed unsafe class BrokerSlotLedger
{
    private const int Slot = BlockLockDescriptor.BrokerSlot;
    private readonly object _gate = new();
    private Dictionary<long, Entry>? _entries; // under _gate; only blocks a broker thread uses now (few)

    /// <summary>Takes a write of block <paramref name="block"/> (record <paramref name="rec"/>) with the broker slot.</summary>
    public LockStatus AcquireWrite(BlockLockRecord* rec, long block, ref LockWait wait)
    {
        Entry e = Enter(block, writer: true);
        LockStatus s = BlockLock.AcquireWrite(rec, Slot, _gate, ref e.Waiters, ref wait, ref e.Owned);
        if (s != LockStatus.Acquired)
        {
            Exit(block, e, writer: true); // BlockLock dropped whatever it had claimed
        }

        return s;
    }

    /// <summary>Releases a write taken with <see cref="AcquireWrite"/>.</summary>
    public void ReleaseWrite(BlockLockRecord* rec, long block, bool wroteWholeBlock, bool markDirty)
    {
        Entry e = Get(block);
        BlockLock.ReleaseWrite(rec, wroteWholeBlock, markDirty, _gate, ref e.Owned);
        Exit(block, e, writer: true);
    }

    /// <summary>Takes a read with the broker slot, waiting as long as <paramref name="wait"/> allows.</summary>
    public LockStatus AcquireRead(BlockLockRecord* rec, long block, ref LockWait wait)
    {
        Entry e = Enter(block, writer: false);
        LockStatus s = BlockLock.AcquireRead(rec, Slot, ref wait);
        if (s != LockStatus.Acquired)
        {
            Exit(block, e, writer: false);
        }

        return s;
    }

    /// <summary>Takes a read with the broker slot if that needs no wait (the write-back never waits).</summary>
    public bool TryAcquireReadFast(BlockLockRecord* rec, long block)
    {
        Entry e = Enter(block, writer: false);
        if (!BlockLock.TryAcquireReadFast(rec, Slot))
        {
            Exit(block, e, writer: false);
            return false;
        }

        return true;
    }

    /// <summary>Releases a read taken with <see cref="AcquireRead"/> or <see cref="TryAcquireReadFast"/>.</summary>
    public void ReleaseRead(BlockLockRecord* rec, long block)
    {
        BlockLock.ReleaseRead(rec, Slot); // the byte first: Reads must never be below the real contribution
        Exit(block, Get(block), writer: false);
    }

    /// <summary>
    /// <see cref="BlockLock.ClearUnowned"/> of one record of this object: <paramref name="liveSlots"/> are the slots
    /// with a live member (the caller holds the broker's state lock, so none gains one meanwhile), and the broker
    /// slot is judged against this ledger under its gate. A record that names the broker slot nowhere is judged
    /// without the gate (there is nothing of slot 63 to clear; a word forged after the look is the next check's).
    /// </summary>
    public RepairResult ClearUnowned(BlockLockRecord* rec, long block, ulong liveSlots)
    {
        const ulong brokerBit = 1UL << Slot;
        if (!BlockLock.NamesSlot(rec, Slot))
        {
            return BlockLock.ClearUnowned(rec, new SlotClaims { LiveSlots = liveSlots | brokerBit });
        }

        lock (_gate)
        {
            Entry? e = null;
            _entries?.TryGetValue(block, out e);
            return BlockLock.ClearUnowned(rec, new SlotClaims
            {
                LiveSlots = liveSlots & ~brokerBit,
                BrokerReads = e?.Reads ?? 0,
                BrokerOwns = e is { Owned: not 0 },
                BrokerWaits = e is { Waiters: > 0 },
            });
        }
    }

    private Entry Enter(long block, bool writer)
    {
        lock (_gate)
        {
            _entries ??= [];
            if (!_entries.TryGetValue(block, out Entry? e))
            {
                e = new Entry();
                _entries.Add(block, e);
            }

            if (writer)
            {
                e.Writers++;
            }
            else
            {
                e.Reads++;
            }

            return e;
        }
    }

    private Entry Get(long block)
    {
        lock (_gate)
        {
            return _entries is not null && _entries.TryGetValue(block, out Entry? e)
                ? e
                : throw new InvalidOperationException($"the broker slot holds nothing on block {block}");
        }
    }

    private void Exit(long block, Entry e, bool writer)
    {
        lock (_gate)
        {
            if (writer)
            {
                e.Writers--;
            }
            else
            {
                e.Reads--;
            }

            if (e.Writers == 0 && e.Reads == 0)
            {
                _entries!.Remove(block);
            }
        }
    }

    /// <summary>One block's record of the broker slot (see the class comment). Fields are passed by reference to
    /// BlockLock, which updates <see cref="Waiters"/> and <see cref="Owned"/> under the gate.</summary>
    private sealed class Entry
    {
        public int Reads;
        public int Writers;
        public int Waiters;
        public int Owned;
    }
}
