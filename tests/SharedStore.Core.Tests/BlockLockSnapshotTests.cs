using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Tests of <see cref="BlockLockSnapshot"/>, the one decoding of a lock record's words outside the lock
/// protocol (the broker's <c>holders</c> reply), on records whose words are set by hand.</summary>
[TestFixture]
public unsafe class BlockLockSnapshotTests
{
    [Test]
    public void Take_ReadersOwnerWaitingAndFlags_DecodesEachSlot()
    {
        // Contract: bits 0-6 of byte s & 7 of reader word s >> 3 are slot s's read count (slots 0, 7, 8, 62, 64, 1023
        // and the broker's 1087, counts up to 127), bit 7 its wait flag; Owner's slot field names slot + 1 and its top
        // bit says active; Flags is a bit set. Nothing is decoded into another slot's byte.
        var rec = TestRecords.Allocate(17);
        try
        {
            TestRecords.Word(rec, 0) = 3UL | (127UL << 56);            // slot 0: 3, slot 7: 127
            TestRecords.Word(rec, 1) = 1 | (0x80UL << 8);               // slot 8: 1, slot 9: waits
            TestRecords.Word(rec, 7) = (2UL << 48) | (0x84UL << 56);    // slot 62: 2, slot 63: 4 and waits
            TestRecords.Word(rec, 8) = 5;                               // slot 64 (line 1): 5
            TestRecords.Word(rec, 127) = 6UL << 56;                     // slot 1023: 6
            TestRecords.Word(rec, 135) = 1UL << 56;                     // slot 1087, the broker's: 1
            rec->Owner = (1000 + 1) | BlockLockDescriptor.OwnerActiveBit;
            rec->Waiting = 1;
            rec->ReaderLines = 0x1_0003;
            rec->Flags = BlockLockDescriptor.FlagTorn;

            var s = BlockLockSnapshot.Take(rec, 17);
            Assert.Multiple(() =>
            {
                Assert.That(s.ReaderSlots, Is.EqualTo(new[] { 0, 7, 8, 62, 63, 64, 1023, 1087 }));
                Assert.That(s.ReadHolds(0), Is.EqualTo(3));
                Assert.That(s.ReadHolds(7), Is.EqualTo(127));
                Assert.That(s.ReadHolds(8), Is.EqualTo(1));
                Assert.That(s.ReadHolds(62), Is.EqualTo(2));
                Assert.That(s.ReadHolds(63), Is.EqualTo(4));
                Assert.That(s.ReadHolds(64), Is.EqualTo(5));
                Assert.That(s.ReadHolds(1023), Is.EqualTo(6));
                Assert.That(s.ReadHolds(1), Is.Zero);
                Assert.That(s.ReadHolds(5000), Is.Zero, "beyond the record");
                Assert.That(s.OwnerSlot, Is.EqualTo(1000));
                Assert.That(s.OwnerActive, Is.True);
                Assert.That(s.WaitingSlots, Is.EqualTo(new[] { 9, 63 }));
                Assert.That(s.WaitingLines, Is.EqualTo(1UL));
                Assert.That(s.ReaderLines, Is.EqualTo(0x1_0003UL));
                Assert.That(s.Torn, Is.True);
                Assert.That(s.Dirty, Is.False);
                Assert.That(s.Unheld, Is.False);
            });
        }
        finally
        {
            TestRecords.Free(rec);
        }
    }

    [Test]
    public void Take_PendingAndForgedOwners_ReportTheSlotFieldAsWritten()
    {
        // Contract: a pending claim is not active; an Owner whose slot field is 0 (a forged word) names slot -1, and
        // one above the last slot is reported as written, for the caller to show (holders shows no pid for it).
        var rec = TestRecords.Allocate(1);
        try
        {
            rec->Owner = 2 + 1;
            var pending = BlockLockSnapshot.Take(rec, 1);
            Assert.That((pending.OwnerSlot, pending.OwnerActive, pending.Unheld), Is.EqualTo((2, false, false)));

            rec->Owner = BlockLockDescriptor.OwnerActiveBit;
            var noSlot = BlockLockSnapshot.Take(rec, 1);
            Assert.That((noSlot.OwnerSlot, noSlot.OwnerActive, noSlot.Unheld), Is.EqualTo((-1, true, false)));

            rec->Owner = 200;
            Assert.That(BlockLockSnapshot.Take(rec, 1).OwnerSlot, Is.EqualTo(199));
        }
        finally
        {
            TestRecords.Free(rec);
        }
    }

    [Test]
    public void Take_OnlyFlagsSet_IsUnheld()
    {
        // Contract: a torn, dirty block that nobody holds, claims or waits for is unheld (holders lists no entry).
        var rec = TestRecords.Allocate(2);
        try
        {
            rec->Flags = BlockLockDescriptor.FlagTorn | BlockLockDescriptor.FlagDirty;
            var s = BlockLockSnapshot.Take(rec, 2);
            Assert.That((s.Unheld, s.Torn, s.Dirty, s.ReaderSlots.Count(), s.Owner, s.WaitingSlots.Count()), Is.EqualTo((true, true, true, 0, 0u, 0)));
        }
        finally
        {
            TestRecords.Free(rec);
        }
    }
}
