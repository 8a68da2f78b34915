using System.Diagnostics;
using SharedStore.Broker;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>State-level tests of the repair of forged lock state: <see cref="BlockLock.ClearUnowned"/>, the broker
/// slot's <see cref="BrokerSlotLedger"/> and <see cref="LockWait"/>'s repair clock, on one record in memory with
/// threads standing in for processes. The cross-process forgeries are in SharedStore.Integration.Tests.
/// Every test runs on a record of one reader line and on one of 17 (slots spread over the lines).</summary>
[TestFixture(1)]
[TestFixture(17)]
public unsafe class LockRepairTests(int lines)
{
    private BlockLockRecord* _rec;

    private int Broker => BlockLockDescriptor.BrokerSlot(lines);

    [SetUp]
    public void SetUp() => _rec = TestRecords.Allocate(lines);

    [TearDown]
    public void TearDown() => TestRecords.Free(_rec);

    /// <summary>The record slot standing for the test's slot <paramref name="i"/> (spread over the lines).</summary>
    private int S(int i) => lines == 1 ? i : i * 67 % ((lines * BlockLockDescriptor.SlotsPerLine) - 1);

    private void SetReader(int slot, int count) => TestRecords.ForgeReads(_rec, slot, count);

    private void SetWaiting(int slot) => TestRecords.ForgeWaiting(_rec, slot);

    private SlotClaims Live(params int[] slots) => new() { LiveSlots = new SlotSet(slots), BrokerSlot = Broker };

    private static int[] Slots(SlotSet? set) => set?.Slots.ToArray() ?? [];

    private BrokerSlotLedger NewLedger() => new(8, Broker);

    private static SlotSet None => new();

    [Test]
    public void ClearUnowned_LiveMembersWords_AreLeftAsTheyAre()
    {
        // Contract: everything that names a live member stays, whatever it is (the broker cannot tell it from a real
        // hold), and the record is not even woken.
        SetReader(S(0), 2);
        SetReader(S(9), 127);
        _rec->Owner = (uint)(S(9) + 1) | BlockLockDescriptor.OwnerActiveBit;
        SetWaiting(S(0));
        SetWaiting(S(9));
        ulong waiting = _rec->Waiting;
        _rec->Seq = 1;
        var r = BlockLock.ClearUnowned(_rec, lines, Live(S(0), S(9)));
        Assert.That(r.Any, Is.False, r.ToString());
        Assert.That(BlockLock.ReadHolds(_rec, S(0)), Is.EqualTo(2));
        Assert.That(BlockLock.ReadHolds(_rec, S(9)), Is.EqualTo(127));
        Assert.That(_rec->Owner, Is.EqualTo((uint)(S(9) + 1) | BlockLockDescriptor.OwnerActiveBit));
        Assert.That(_rec->Waiting, Is.EqualTo(waiting));
        Assert.That(TestRecords.Byte(_rec, S(9)), Is.EqualTo(127 | BlockLockDescriptor.SlotWaitFlag));
        Assert.That(_rec->Seq, Is.EqualTo(1), "nothing changed: no wake");
        Assert.That(BlockLock.IsTorn(_rec), Is.False);
    }

    [Test]
    public void ClearUnowned_MemberlessSlot_ReadsOwnerWaitingCleared_TornMarked_SleepersWoken()
    {
        // Contract: a reader byte, an active Owner and a Waiting bit of a slot with no member are cleared (the live
        // member's byte in the same word stays); clearing an active owner marks the block torn and dirty; sleepers
        // are woken (Seq changes).
        int live = S(0), dead = S(0) + 5; // two slots of one word
        SetReader(live, 1);
        SetReader(dead, 3);
        _rec->Owner = (uint)(dead + 1) | BlockLockDescriptor.OwnerActiveBit;
        SetWaiting(dead);
        SetWaiting(live);
        SetWaiting(S(5)); // alone on its line (17 lines)
        _rec->Seq = 1;
        var r = BlockLock.ClearUnowned(_rec, lines, Live(live));
        Assert.That(Slots(r.ReaderSlots), Is.EqualTo(new[] { dead }));
        Assert.That(r.Owner, Is.EqualTo((uint)(dead + 1) | BlockLockDescriptor.OwnerActiveBit));
        Assert.That(Slots(r.WaitingSlots), Is.EqualTo(new[] { live, dead, S(5) }.Distinct().Where(s => s != live).Order().ToArray()));
        Assert.That(BlockLock.ReadHolds(_rec, live), Is.EqualTo(1), "the live slot's byte in the same word");
        Assert.That(BlockLock.ReadHolds(_rec, dead), Is.Zero);
        Assert.That(_rec->Owner, Is.Zero);
        Assert.That(_rec->Waiting, Is.EqualTo(1UL << (live >> 6)), "the line of the live waiter only");
        Assert.That(BlockLock.IsTorn(_rec) && BlockLock.IsDirty(_rec), Is.True);
        Assert.That(_rec->Seq, Is.Not.EqualTo(1), "woken");
    }

    [TestCase(BlockLockDescriptor.OwnerActiveBit)] // active, no slot
    [TestCase(0x2000u)]                            // junk above the slot field, no slot
    [TestCase(4097u)]                              // a slot number that does not exist
    public void ClearUnowned_OwnerNamingNoSlot_IsCleared(uint owner)
    {
        // Contract: an Owner whose slot field names no slot at all belongs to nobody.
        _rec->Owner = owner;
        Assert.That(BlockLock.ClearUnowned(_rec, lines, Live(0, 1)).Owner, Is.EqualTo(owner));
        Assert.That(_rec->Owner, Is.Zero);
    }

    [Test]
    public void ClearUnowned_LiveOwnerWithJunkBits_IsLeft()
    {
        // Contract (the documented limit): a word naming a live member is that member's as far as the broker can tell,
        // even with bits no real Owner has (a forger may have OR-ed them into a real hold, which clearing would break).
        _rec->Owner = 2 | 0x0001_0000;
        Assert.That(BlockLock.ClearUnowned(_rec, lines, Live(1)).Any, Is.False);
        Assert.That(_rec->Owner, Is.EqualTo(2 | 0x0001_0000u));
    }

    [Test]
    public void Ledger_BrokerSlotWordsHeldByNoBrokerThread_AreCleared()
    {
        // Contract: the broker slot's byte, an Owner of slot 63 and Waiting bit 63 are cleared when no broker thread
        // holds or waits for them, even though the slot "belongs" to the broker.
        var ledger = NewLedger();
        SetReader(Broker, 4);
        _rec->Owner = (uint)Broker + 1;
        SetWaiting(Broker);
        var r = ledger.ClearUnowned(_rec, 0, lines, None);
        Assert.That(Slots(r.ReaderSlots), Is.EqualTo(new[] { Broker }));
        Assert.That(r.Owner, Is.EqualTo((uint)Broker + 1));
        Assert.That(Slots(r.WaitingSlots), Is.EqualTo(new[] { Broker }));
        Assert.That(_rec->Waiting, Is.Zero);
        Assert.That(BlockLock.NamesSlot(_rec, Broker), Is.False);
    }

    [Test]
    public void Ledger_RealBrokerReadsAndWrite_AreKept_ForgedExcessIsLowered()
    {
        // Contract: what a broker thread really holds stays: a read hold keeps byte 63 at one (a forged excess above it
        // goes), a write keeps Owner; a forged owner is cleared once the write is released.
        var ledger = NewLedger();
        Assert.That(ledger.TryAcquireReadFast(_rec, 0), Is.True);
        SetReader(Broker, 5); // forged on top of the real hold
        var r = ledger.ClearUnowned(_rec, 0, lines, None);
        Assert.That(BlockLock.ReadHolds(_rec, Broker), Is.EqualTo(1), r.ToString());
        ledger.ReleaseRead(_rec, 0);
        Assert.That(BlockLock.ReadHolds(_rec, Broker), Is.Zero);

        var wait = new LockWait(new LockWaitPolicy(), TimeSpan.FromSeconds(5), default);
        Assert.That(ledger.AcquireWrite(_rec, 0, ref wait), Is.EqualTo(LockStatus.Acquired));
        Assert.That(ledger.ClearUnowned(_rec, 0, lines, None).Any, Is.False, "the broker's real active write");
        Assert.That(_rec->Owner, Is.EqualTo((Broker + 1) | BlockLockDescriptor.OwnerActiveBit));
        ledger.ReleaseWrite(_rec, 0, wroteWholeBlock: false, markDirty: false);
        _rec->Owner = (uint)Broker + 1; // forged after the release
        Assert.That(ledger.ClearUnowned(_rec, 0, lines, None).Owner, Is.EqualTo((uint)Broker + 1));
    }

    [Test]
    public void Ledger_BrokerWaitsBehindAForgedBrokerOwner_RepairClearsItAndKeepsTheWaitingBit()
    {
        // Contract: a forged Owner naming the broker slot while a broker thread waits to own the block is cleared (the
        // thread has not claimed it), the waiting thread's own Waiting bit 63 stays, and the thread then gets the block.
        var ledger = NewLedger();
        _rec->Owner = (uint)Broker + 1; // forged
        var t = Task.Run(() =>
        {
            var wait = new LockWait(new LockWaitPolicy(), TimeSpan.FromSeconds(10), default);
            return ledger.AcquireWrite(_rec, 3, ref wait);
        });
        var sw = Stopwatch.StartNew();
        while ((TestRecords.Byte(_rec, Broker) & BlockLockDescriptor.SlotWaitFlag) == 0)
        {
            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "the broker thread never waited");
            Thread.Sleep(1);
        }

        var r = ledger.ClearUnowned(_rec, 3, lines, None);
        Assert.That(r.Owner, Is.EqualTo((uint)Broker + 1), r.ToString());
        Assert.That(r.WaitingSlots, Is.Null, "the wait flag is the waiting thread's own");
        Assert.That(r.WaitingLines, Is.Zero, "and so is its line's bit");
        Assert.That(t.Wait(TimeSpan.FromSeconds(10)) && t.Result == LockStatus.Acquired, Is.True);
        Assert.That(ledger.ClearUnowned(_rec, 3, lines, None).Any, Is.False, "now really owned");
        ledger.ReleaseWrite(_rec, 3, wroteWholeBlock: false, markDirty: false);
        Assert.That(_rec->Owner, Is.Zero);
    }

    [Test]
    public void LockWait_WaitedTheRepairInterval_AsksOnceThenAgainEachInterval()
    {
        // Contract: a wait asks its requester to check the record after RepairAfter of waiting on it and again every
        // further interval; when the check clears the forged word (and wakes), the wait completes.
        var policy = new LockWaitPolicy { RepairAfterTicks = Stopwatch.Frequency / 50 }; // 20 ms
        _rec->Owner = 41; // forged: slot 40, no member
        var broker = new ClearingRequester(_rec, lines, clearAfter: 3);
        var sw = Stopwatch.StartNew();
        var wait = new LockWait(policy, TimeSpan.FromSeconds(10), default, broker);
        Assert.That(BlockLock.AcquireWrite(_rec, 0, new object(), ref _localWaiters, ref wait), Is.EqualTo(LockStatus.Acquired));
        Assert.That(broker.Calls, Is.EqualTo(3), "asked every interval until the word was cleared");
        Assert.That(sw.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(55)), "three intervals of 20 ms");
        BlockLock.ReleaseWrite(_rec, wroteWholeBlock: false);
    }

    private int _localWaiters;

    /// <summary>Stands in for the broker: clears the record on the n-th check.</summary>
    private sealed class ClearingRequester(BlockLockRecord* rec, int lines, int clearAfter) : ILockRepairRequester
    {
        public int Calls;

        public void RequestCheck(BlockLockRecord* r)
        {
            Assert.That(r == rec, Is.True);
            if (++Calls == clearAfter)
            {
                BlockLock.ClearUnowned(r, lines, new SlotClaims { LiveSlots = new SlotSet([0]), BrokerSlot = BlockLockDescriptor.BrokerSlot(lines) });
            }
        }
    }
}
