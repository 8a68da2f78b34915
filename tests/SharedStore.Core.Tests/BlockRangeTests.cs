using SharedStore.Broker;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>State-level tests of the block-range protocol (<see cref="BlockRange"/>) and the object view
/// (<see cref="ObjectView"/>) over real memfd mappings in this process: a three-block object with a short last block,
/// other slots' holds written into the records the way another process's would be. The callers' cross-process
/// behaviour is covered by SharedStore.Integration.Tests. Every test runs with records of one reader line and of 17.</summary>
[TestFixture(1)]
[TestFixture(17)]
public unsafe class BlockRangeTests(int lines)
{
    private const int Shift = 12;                          // 1 << 12 = 4096-byte blocks
    private const int BlockSize = 1 << Shift;
    private const long Size = (2 * BlockSize) + 1000;      // blocks 0, 1 whole, block 2 short (1000 bytes)
    private const int Me = 0;                              // this process's slot
    private int Other => lines == 1 ? 5 : 600;             // another member's slot (on another line with 17 lines)

    private int Broker => BlockLockDescriptor.BrokerSlot(lines);

    private SafeFd _dataFd = null!;
    private SafeFd _lockFd = null!;
    private MappedRegion _data = null!;
    private MappedRegion _locks = null!;
    private readonly List<ObjectView> _views = [];

    [SetUp]
    public void SetUp()
    {
        _dataFd = Memfd.Create("blockrange-test-data", 4 * BlockSize);
        _lockFd = Memfd.Create("blockrange-test-locks", 4096);
        _data = MappedRegion.Map(_dataFd, 4 * BlockSize, writable: true);
        _locks = MappedRegion.Map(_lockFd, 4096, writable: true);
    }

    [TearDown]
    public void TearDown()
    {
        foreach (var v in _views)
        {
            v.Dispose();
        }

        _views.Clear();
        _data.Dispose();
        _locks.Dispose();
        _dataFd.Dispose();
        _lockFd.Dispose();
    }

    private ObjectView View(bool durable = false, ISlotLedger? ledger = null, int slot = Me)
    {
        var v = new ObjectView("o", _data, 0, _locks, 0, lines, Size, Shift, slot, durable, repair: null, ledger);
        _views.Add(v);
        return v;
    }

    private static LockWait NoWait() => new(new LockWaitPolicy(), TimeSpan.Zero, default);

    private static LockWait Patient() => new(new LockWaitPolicy(), TimeSpan.FromSeconds(5), default);

    private static void SetReader(BlockLockRecord* rec, int slot, int count) => TestRecords.ForgeReads(rec, slot, count);

    // ---- The view's references on its mappings ---------------------------------------------------------------

    [Test]
    public void View_HoldsBothMappings_UntilDisposed()
    {
        // Contract: a view references the data and lock mappings from its constructor on: disposing the regions (as a
        // container does when it is left) leaves them mapped and usable through the view; the view's Dispose then
        // unmaps them. A second Dispose does nothing.
        var v = View();
        _data.Dispose();
        _locks.Dispose();
        Assert.That(_data.IsClosed, Is.False, "data still mapped");
        Assert.That(_locks.IsClosed, Is.False, "lock records still mapped");
        v.Data[Size - 1] = 42;
        Assert.That(v.Data[Size - 1], Is.EqualTo(42));
        Assert.That(v.All.TryAcquireReadFast(), Is.True);
        v.All.ReleaseRead();

        v.Dispose();
        Assert.That(_data.IsClosed, Is.True, "unmapped at the view's release");
        Assert.That(_locks.IsClosed, Is.True);
        Assert.DoesNotThrow(v.Dispose);
    }

    [Test]
    public void View_TryAddRef_KeepsTheMappingsPastDispose_UntilReleased()
    {
        // Contract: an operation that took a reference keeps the mappings after the owner disposed the view; its
        // Release is the last one and unmaps. A view released for good refuses new references.
        var v = View();
        Assert.That(v.TryAddRef(), Is.True);
        _data.Dispose();
        _locks.Dispose();
        v.Dispose();
        Assert.That(_data.IsClosed, Is.False, "the operation's reference keeps the data mapped");
        Assert.That(_locks.IsClosed, Is.False);
        v.Release();
        Assert.That(_data.IsClosed, Is.True);
        Assert.That(_locks.IsClosed, Is.True);
        Assert.That(v.TryAddRef(), Is.False);
    }

    [Test]
    public void View_OutsideItsMappings_ThrowsInternalAndReferencesNothing()
    {
        // Contract: an object that does not fit its mappings (data or lock records) is refused with Internal, and the
        // refused view keeps no reference: disposing the regions unmaps them.
        var e1 = Assert.Throws<SharedStoreException>(() => _ = new ObjectView("o", _data, 3 * BlockSize, _locks, 0, lines, Size, Shift, Me, false, null));
        Assert.That(e1!.Code, Is.EqualTo(ErrorCode.Internal));
        var e2 = Assert.Throws<SharedStoreException>(() => _ = new ObjectView("o", _data, 0, _locks, 4096 - BlockLockDescriptor.RecordSize(lines), lines, Size, Shift, Me, false, null));
        Assert.That(e2!.Code, Is.EqualTo(ErrorCode.Internal));
        _data.Dispose();
        _locks.Dispose();
        Assert.That(_data.IsClosed, Is.True);
        Assert.That(_locks.IsClosed, Is.True);
    }

    // ---- Ascending acquire, rollback ---------------------------------------------------------------------------

    [Test]
    public void AcquireWrite_ALaterBlockIsTaken_FailsHoldingNothingAndChangingNoFlag()
    {
        // Contract: a range write that cannot get its last block within the budget returns the wait's status with
        // every block it had taken released: no Owner, no Waiting bit of its slot, flags as they were (a torn mark
        // stays, nothing is marked dirty).
        var v = View(durable: true);
        BlockLock.MarkTorn(v.Record(0));
        v.Record(0)->Flags &= ~BlockLockDescriptor.FlagDirty;
        v.Record(2)->Owner = (uint)Other + 1;
        var wait = NoWait();
        Assert.That(v.All.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(v.Record(0)->Owner, Is.Zero);
            Assert.That(v.Record(1)->Owner, Is.Zero);
            Assert.That(v.Record(2)->Owner, Is.EqualTo((uint)Other + 1), "the other slot's claim is untouched");
            Assert.That(v.Record(0)->Waiting | v.Record(1)->Waiting | v.Record(2)->Waiting, Is.Zero);
            Assert.That(v.Record(0)->Flags, Is.EqualTo(BlockLockDescriptor.FlagTorn));
            Assert.That(v.Record(1)->Flags, Is.Zero);
        });

        v.Record(2)->Owner = 0;
        wait = Patient();
        Assert.That(v.All.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired), "nothing was left held");
    }

    [Test]
    public void AcquireRead_ALaterBlockIsWritten_FailsHoldingNothing()
    {
        // Contract: the same for reads: the blocks read-held before the one that timed out are released.
        var v = View();
        v.Record(1)->Owner = (uint)(Other + 1) | BlockLockDescriptor.OwnerActiveBit;
        var wait = NoWait();
        Assert.That(v.All.AcquireRead(ref wait, out _), Is.EqualTo(LockStatus.Timeout));
        Assert.That(BlockLock.ReadHolds(v.Locks, Me), Is.Zero);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(-1));
    }

    [Test]
    public void TryAcquireReadFast_IsAllOrNothing_AndTheOneBlockFormTakesOnlyOneBlock()
    {
        // Contract: the no-wait read takes every block or none; the one-block get path refuses a longer range
        // without touching it, and reports the block's torn mark when it takes it.
        var v = View();
        v.Record(2)->Owner = (uint)Other + 1;
        Assert.That(v.All.TryAcquireReadFast(), Is.False);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(-1));
        Assert.That(v.Range(0, 2 * BlockSize).TryAcquireOneReadFast(out _), Is.False);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(-1));

        BlockLock.MarkTorn(v.Record(1));
        Assert.That(v.Range(BlockSize + 10, 20).TryAcquireOneReadFast(out bool torn), Is.True);
        Assert.That(torn, Is.True);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(1));
    }

    [Test]
    public void Range_OfNoBytes_HasNoBlocks_AndARangeEndingOnABoundaryStopsBeforeIt()
    {
        // Contract: the seed's end index is one too many on a boundary: [0, 4096) is block 0 alone; an empty range
        // takes nothing (a get of 0 bytes at the object's end touches no record).
        var v = View();
        var r = v.Range(0, BlockSize);
        Assert.That((r.First, r.Last), Is.EqualTo((0L, 0L)));
        var empty = v.Range(Size, 0);
        Assert.That(empty.Last, Is.LessThan(empty.First));
        var wait = NoWait();
        Assert.That(empty.AcquireRead(ref wait, out _), Is.EqualTo(LockStatus.Acquired));
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(-1));
    }

    // ---- Whole-block rewrites ---------------------------------------------------------------------------------

    [Test]
    public void ReleaseWrite_ClearsTheTornMarkOnlyOfBlocksWrittenWhole()
    {
        // Contract: a write that covers a block from its first byte to its last (to the object's end for a short last
        // block) clears its torn mark; a block written in part stays torn.
        var v = View();
        v.All.MarkTorn();
        var wait = Patient();
        Assert.That(v.All.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        v.All.ReleaseWrite(100, Size - 100); // block 0 from byte 100; blocks 1 and 2 whole
        Assert.That(BlockLock.IsTorn(v.Record(0)), Is.True, "block 0 was written in part");
        Assert.That(BlockLock.IsTorn(v.Record(1)), Is.False);
        Assert.That(BlockLock.IsTorn(v.Record(2)), Is.False, "the short last block, written to the object's end");

        var block0 = v.Block(0);
        wait = Patient();
        Assert.That(block0.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        block0.ReleaseWrite(0, BlockSize); // exactly the block
        Assert.That(BlockLock.IsTorn(v.Record(0)), Is.False);
        Assert.That(v.All.AnyTorn(), Is.False);
        Assert.That(v.Record(0)->Owner | v.Record(1)->Owner | v.Record(2)->Owner, Is.Zero);
    }

    [Test]
    public void ReleaseWrite_SpansThatCoverABlockOnlyTogether_DoNotClearItsTornMark()
    {
        // Contract (the asynchronous applier's groups): a block is rewritten whole only if one written span covers it;
        // two spans that meet inside it do not (exactly as before the protocol moved here).
        var v = View();
        v.Block(0).MarkTorn();
        var wait = Patient();
        Assert.That(v.Block(0).AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        v.Block(0).ReleaseWrite([new WrittenSpan(0, 2048), new WrittenSpan(2048, 2048)]);
        Assert.That(BlockLock.IsTorn(v.Locks), Is.True);
    }

    [Test]
    public void ReleaseWrite_Durable_MarksEveryBlockDirty_NotDurable_None()
    {
        // Contract: in a durable container every block of a released write is marked dirty (write-back picks it up);
        // otherwise no block is; blocks outside the range are untouched.
        var durable = View(durable: true);
        var wait = Patient();
        Assert.That(durable.Range(0, 10).AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        durable.Range(0, 10).ReleaseWrite(0, 10);
        Assert.That(BlockLock.IsDirty(durable.Record(0)), Is.True);
        Assert.That(BlockLock.IsDirty(durable.Record(1)), Is.False);
        Assert.That(durable.Block(0).TakeDirty(), Is.True);

        var plain = View();
        wait = Patient();
        Assert.That(plain.All.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        plain.All.ReleaseWrite(0, Size);
        Assert.That(plain.All.AnyDirty(), Is.False);
    }

    [Test]
    public void ReleaseWriteTorn_MarksEveryBlockTornAndDirty_AndReleasesIt()
    {
        // Contract: a writer cut off part way (a chunked write whose client died) leaves its range torn and dirty,
        // released as if the writer had been killed mid-write.
        var v = View(durable: true);
        var wait = Patient();
        Assert.That(v.Range(0, 2 * BlockSize).AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        v.Range(0, 2 * BlockSize).ReleaseWriteTorn();
        Assert.That(BlockLock.IsTorn(v.Record(0)) && BlockLock.IsTorn(v.Record(1)), Is.True);
        Assert.That(BlockLock.IsDirty(v.Record(0)) && BlockLock.IsDirty(v.Record(1)), Is.True);
        Assert.That(BlockLock.IsTorn(v.Record(2)), Is.False, "outside the range");
        Assert.That(v.Record(0)->Owner | v.Record(1)->Owner, Is.Zero);
    }

    [Test]
    public void MarkCleanUnlessTorn_ClearsDirtyOnIntactBlocksOnly()
    {
        // Contract (restore): restored blocks are clean, torn ones stay dirty so they are written back flagged torn.
        var v = View();
        v.All.MarkDirty();
        v.Block(1).MarkTorn();
        v.All.MarkCleanUnlessTorn();
        Assert.That(BlockLock.IsDirty(v.Record(0)), Is.False);
        Assert.That(BlockLock.IsDirty(v.Record(1)), Is.True);
        Assert.That(BlockLock.IsDirty(v.Record(2)), Is.False);
    }

    // ---- The WouldDeadlock check ------------------------------------------------------------------------------

    [Test]
    public void FirstReadHeld_FindsOnlyThisProcesssOwnReadHolds()
    {
        // Contract: the check that refuses a write over the writer's own leases sees its own slot's holds, not other
        // members' (a write over those waits for them instead).
        var v = View();
        SetReader(v.Record(1), Other, 1);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(-1));
        SetReader(v.Record(2), Me, 1);
        Assert.That(v.All.FirstReadHeld(), Is.EqualTo(2));
        Assert.That(v.Range(0, 2 * BlockSize).FirstReadHeld(), Is.EqualTo(-1));
    }

    // ---- The broker's slot -----------------------------------------------------------------------------------

    [Test]
    public void BrokerView_EveryHoldGoesThroughItsLedger()
    {
        // Contract: a view with a ledger (the broker's slot) records every read and write it takes, so a repair keeps
        // them; after their release the same words are forgeries, and the repair clears them.
        var ledger = new BrokerSlotLedger(3, Broker);
        var v = View(ledger: ledger, slot: Broker);
        var wait = Patient();
        Assert.That(v.All.AcquireWrite(ref wait), Is.EqualTo(LockStatus.Acquired));
        for (long b = 0; b < 3; b++)
        {
            Assert.That(ledger.ClearUnowned(v.Record(b), b, lines, new SlotSet()).Any, Is.False, $"block {b}: the broker's write is recorded");
        }

        v.All.ReleaseWrite(0, Size);
        wait = Patient();
        Assert.That(v.All.AcquireRead(ref wait, out _), Is.EqualTo(LockStatus.Acquired));
        Assert.That(ledger.ClearUnowned(v.Record(2), 2, lines, new SlotSet()).Any, Is.False, "the broker's read is recorded");
        v.All.ReleaseRead();

        v.Record(0)->Owner = (uint)Broker + 1;
        SetReader(v.Record(1), Broker, 1);
        Assert.That(ledger.ClearUnowned(v.Record(0), 0, lines, new SlotSet()).Owner, Is.EqualTo((uint)Broker + 1));
        Assert.That(ledger.ClearUnowned(v.Record(1), 1, lines, new SlotSet()).ReaderSlots!.Slots, Is.EqualTo(new[] { Broker }));
    }
}
