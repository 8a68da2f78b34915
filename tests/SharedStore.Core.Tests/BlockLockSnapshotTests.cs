using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Tests of <see cref="BlockLockSnapshot"/>, the one decoding of a lock record's words outside the lock
/// protocol (the broker's <c>holders</c> reply), on a record on the stack whose words are set by hand.</summary>
[TestFixture]
public unsafe class BlockLockSnapshotTests
{
    [Test]
    public void Take_ReadersOwnerWaitingAndFlags_DecodesEachSlot()
    {
        // Contract: byte s & 7 of reader word s >> 3 is slot s's read count (slots 0, 7, 8, 62 and the broker's 63,
        // counts up to 255); Owner's low byte names slot + 1 and its top bit says active; Waiting and Flags are bit
        // sets. Nothing is decoded into another slot's byte.
        BlockLockRecord record = default;
        BlockLockRecord* rec = &record;
        rec->Readers[0] = 3UL | (255UL << 56);       // slot 0: 3, slot 7: 255
        rec->Readers[1] = 1;                         // slot 8: 1
        rec->Readers[7] = (2UL << 48) | (4UL << 56); // slot 62: 2, slot 63: 4
        rec->Owner = (5 + 1) | BlockLockDescriptor.OwnerActiveBit;
        rec->Waiting = (1UL << 9) | (1UL << 63);
        rec->Flags = BlockLockDescriptor.FlagTorn;

        var s = BlockLockSnapshot.Take(rec);
        Assert.Multiple(() =>
        {
            Assert.That(s.ReaderSlots, Is.EqualTo((1UL << 0) | (1UL << 7) | (1UL << 8) | (1UL << 62) | (1UL << 63)));
            Assert.That(s.ReadHolds(0), Is.EqualTo(3));
            Assert.That(s.ReadHolds(7), Is.EqualTo(255));
            Assert.That(s.ReadHolds(8), Is.EqualTo(1));
            Assert.That(s.ReadHolds(62), Is.EqualTo(2));
            Assert.That(s.ReadHolds(63), Is.EqualTo(4));
            Assert.That(s.ReadHolds(1), Is.Zero);
            Assert.That(s.OwnerSlot, Is.EqualTo(5));
            Assert.That(s.OwnerActive, Is.True);
            Assert.That(s.WaitingSlots, Is.EqualTo((1UL << 9) | (1UL << 63)));
            Assert.That(s.Torn, Is.True);
            Assert.That(s.Dirty, Is.False);
            Assert.That(s.Unheld, Is.False);
        });
    }

    [Test]
    public void Take_PendingAndForgedOwners_ReportTheSlotFieldAsWritten()
    {
        // Contract: a pending claim is not active; an Owner whose slot field is 0 (a forged word) names slot -1, and
        // one above the last slot is reported as written, for the caller to show (holders shows no pid for it).
        BlockLockRecord record = default;
        BlockLockRecord* rec = &record;
        rec->Owner = 2 + 1;
        var pending = BlockLockSnapshot.Take(rec);
        Assert.That((pending.OwnerSlot, pending.OwnerActive, pending.Unheld), Is.EqualTo((2, false, false)));

        rec->Owner = BlockLockDescriptor.OwnerActiveBit;
        var noSlot = BlockLockSnapshot.Take(rec);
        Assert.That((noSlot.OwnerSlot, noSlot.OwnerActive, noSlot.Unheld), Is.EqualTo((-1, true, false)));

        rec->Owner = 200;
        Assert.That(BlockLockSnapshot.Take(rec).OwnerSlot, Is.EqualTo(199));
    }

    [Test]
    public void Take_OnlyFlagsSet_IsUnheld()
    {
        // Contract: a torn, dirty block that nobody holds, claims or waits for is unheld (holders lists no entry).
        BlockLockRecord record = default;
        BlockLockRecord* rec = &record;
        rec->Flags = BlockLockDescriptor.FlagTorn | BlockLockDescriptor.FlagDirty;
        var s = BlockLockSnapshot.Take(rec);
        Assert.That((s.Unheld, s.Torn, s.Dirty, s.ReaderSlots, s.Owner, s.WaitingSlots), Is.EqualTo((true, true, true, 0UL, 0u, 0UL)));
    }
}
