using System.Diagnostics;
using System.Runtime.InteropServices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>State-level tests of <see cref="BlockLock"/> on one record in memory, with threads standing in for slots.
/// Cross-process behaviour is covered by SharedStore.Integration.Tests. Every test runs on a record of one reader line
/// (63 members) and on one of 17 (1 024 members), where the test's slots 0, 1, 2, … are spread over different lines.</summary>
[TestFixture(1)]
[TestFixture(17)]
public unsafe class BlockLockTests(int lines)
{
    private BlockLockRecord* _rec;
    private LockWaitPolicy _policy = null!;
    private object _gate = null!;
    private int[] _waiters = null!;

    [SetUp]
    public void SetUp()
    {
        _rec = TestRecords.Allocate(lines);
        _policy = new LockWaitPolicy();
        _gate = new object();
        _waiters = new int[BlockLockDescriptor.MaxSlots];
    }

    /// <summary>The record slot standing for the test's slot <paramref name="i"/>: itself on one line; else spread
    /// over the lines (i · 67 mod slots: 1 → line 1, 2 → line 2, …).</summary>
    private int S(int i) => lines == 1 ? i : i * 67 % (lines * BlockLockDescriptor.SlotsPerLine);

    [TearDown]
    public void TearDown() => TestRecords.Free(_rec);

    private LockStatus Read(int slot, int timeoutMs = 5000)
    {
        var w = new LockWait(_policy, TimeSpan.FromMilliseconds(timeoutMs), default);
        return BlockLock.AcquireRead(_rec, S(slot), ref w);
    }

    private LockStatus Write(int slot, int timeoutMs = 5000)
    {
        var w = new LockWait(_policy, TimeSpan.FromMilliseconds(timeoutMs), default);
        return BlockLock.AcquireWrite(_rec, S(slot), _gate, ref _waiters[S(slot)], ref w);
    }

    [Test]
    public void AcquireRead_Uncontended_CountsInOwnSlotByteOnly()
    {
        // Contract: a read is exactly the slot's byte; no other field changes.
        Assert.That(Read(9), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Read(9), Is.EqualTo(LockStatus.Acquired));
        Assert.That(TestRecords.Byte(_rec, S(9)), Is.EqualTo(2));
        Assert.That(TestRecords.NonZeroBytes(_rec, lines), Is.EqualTo(new[] { S(9) }), "no other slot's byte changed");
        Assert.That(_rec->ReaderLines, Is.EqualTo(1UL << (S(9) >> 6)), "the slot's line is announced");
        Assert.That(_rec->Owner, Is.Zero);
        BlockLock.ReleaseRead(_rec, S(9));
        BlockLock.ReleaseRead(_rec, S(9));
        Assert.That(BlockLock.AnyReaders(_rec), Is.False);
    }

    [Test]
    public void AcquireWrite_WithAReader_TimesOutAndHoldsNothing()
    {
        // Contract: a writer that gives up leaves Owner and Waiting as they were.
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Write(2, 50), Is.EqualTo(LockStatus.Timeout));
        Assert.That(_rec->Owner, Is.Zero);
        Assert.That(_rec->Waiting, Is.Zero);
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(Write(2), Is.EqualTo(LockStatus.Acquired));
        Assert.That(_rec->Owner, Is.EqualTo((uint)(S(2) + 1) | BlockLockDescriptor.OwnerActiveBit));
        BlockLock.ReleaseWrite(_rec, wroteWholeBlock: true);
        Assert.That(_rec->Owner, Is.Zero);
    }

    [Test]
    public void AcquireRead_WhileWriteHeld_TimesOut()
    {
        Assert.That(Write(4), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Read(5, 30), Is.EqualTo(LockStatus.Timeout));
        Assert.That(BlockLock.AnyReaders(_rec), Is.False, "a reader that timed out backed out");
        BlockLock.ReleaseWrite(_rec, false);
    }

    [Test]
    public void WaitingWriter_BlocksNewReaders_ButNotReentrantOnes()
    {
        // Contract (writer priority): once a writer waits, readers that do not hold the block queue behind it,
        // while a slot that already holds a read may read again (else it would deadlock against that writer).
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        var writer = Task.Run(() => Write(2, 10_000));
        SpinUntil(() => _rec->Owner != 0, "writer to announce itself");
        Assert.That(Read(3, 100), Is.EqualTo(LockStatus.Timeout), "a new reader must queue behind the waiting writer");
        Assert.That(Read(1, 100), Is.EqualTo(LockStatus.Acquired), "re-entry must not block behind the writer");
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(writer.IsCompleted, Is.False);
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(writer.Wait(10_000), Is.True);
        Assert.That(writer.Result, Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, false);
    }

    [Test]
    public void QueuedWriter_GoesBeforeReadersThatArriveAfterIt()
    {
        // Contract: writer B waits behind writer A; a reader arriving after B waits until B has written.
        Assert.That(Write(1), Is.EqualTo(LockStatus.Acquired));
        var b = Task.Run(() => Write(2, 10_000));
        SpinUntil(() => _rec->Waiting != 0, "writer B to register as waiting");
        var order = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var reader = Task.Run(() =>
        {
            var s = Read(3, 10_000);
            order.Enqueue("reader");
            BlockLock.ReleaseRead(_rec, S(3));
            return s;
        });
        FutexSleepers.WaitFor(&_rec->Seq, 2, "writer B and the reader to sleep on the record");
        BlockLock.ReleaseWrite(_rec, false); // A done
        Assert.That(b.Wait(10_000), Is.True);
        order.Enqueue("writerB");
        FutexSleepers.WaitFor(&_rec->Seq, 1, "the reader to sleep again while B holds the block");
        BlockLock.ReleaseWrite(_rec, false);
        Assert.That(reader.Wait(10_000), Is.True);
        Assert.That(order, Is.EqualTo(new[] { "writerB", "reader" }));
    }

    [Test]
    public void ReleaseRead_WakesASleepingWriter()
    {
        // Contract: no lost wake-up: a writer asleep on the futex wakes when the last reader puts. Its sleep slice is
        // 10 minutes, so only the put's FUTEX_WAKE can end the sleep within the 60 s the test waits (a clock-free
        // check: a loaded machine may delay the wake-up, never turn a lost one into a timely one).
        var policy = new LockWaitPolicy { SpinTicks = 0, SleepSliceNs = 600_000_000_000 }; // sleep at once, for long
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        var writer = Task.Run(() =>
        {
            var w = new LockWait(policy, TimeSpan.FromMinutes(10), default);
            return BlockLock.AcquireWrite(_rec, S(2), _gate, ref _waiters[S(2)], ref w);
        });
        SpinUntil(() => (_rec->Seq & 1) != 0, "writer to sleep");
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(writer.Wait(60_000), Is.True, "the writer was woken by the put");
        Assert.That(writer.Result, Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, false);
    }

    [Test]
    public void ScrubSlot_ReleasesEverythingTheSlotHeld()
    {
        // Contract (recovery): after ScrubSlot(s) the record holds nothing of s, and others' state is untouched.
        Assert.That(Read(7), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Read(7), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Read(8), Is.EqualTo(LockStatus.Acquired));
        TestRecords.ForgeWaiting(_rec, S(7));
        var r = BlockLock.ScrubSlot(_rec, S(7));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(r.ReadHolds, Is.EqualTo(2));
            Assert.That(r.Waiting, Is.True);
            Assert.That(BlockLock.ReadHolds(_rec, S(7)), Is.Zero);
            Assert.That(BlockLock.ReadHolds(_rec, S(8)), Is.EqualTo(1));
            Assert.That(_rec->Waiting, Is.Zero);
        }
        BlockLock.ReleaseRead(_rec, S(8));
    }

    [Test]
    public void ScrubSlot_OfAnActiveWriter_MarksTheBlockTorn_UntilAWholeWrite()
    {
        // Contract (torn writes): a writer that died while active leaves the block marked torn; a whole-block write clears it.
        Assert.That(Write(5), Is.EqualTo(LockStatus.Acquired));
        var r = BlockLock.ScrubSlot(_rec, S(5));
        Assert.That(r.Owned && r.Torn, Is.True);
        Assert.That(BlockLock.IsTorn(_rec), Is.True);
        Assert.That(_rec->Owner, Is.Zero);
        Assert.That(Write(6), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, wroteWholeBlock: false);
        Assert.That(BlockLock.IsTorn(_rec), Is.True, "a partial write does not repair the block");
        Assert.That(Write(6), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, wroteWholeBlock: true);
        Assert.That(BlockLock.IsTorn(_rec), Is.False);
    }

    [Test]
    public void ScrubSlot_OfAPendingWriter_ReleasesWithoutTornMark()
    {
        // Contract: a writer that died before its readers drained wrote nothing: no torn mark, and readers proceed.
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        var w = Task.Run(() => Write(2, 10_000));
        SpinUntil(() => _rec->Owner == (uint)S(2) + 1, "writer pending");
        // Simulate the writer's death: the broker scrubs its slot while its thread is stuck. (The thread itself is
        // then released by the reader's put; in a real crash it no longer exists.)
        var r = BlockLock.ScrubSlot(_rec, S(2));
        Assert.That(r.Owned && !r.Torn, Is.True);
        Assert.That(Read(3, 1000), Is.EqualTo(LockStatus.Acquired), "new readers are no longer held off");
        BlockLock.ReleaseRead(_rec, S(3));
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(w.Wait(10_000), Is.True);
        if (w.Result == LockStatus.Acquired)
        {
            BlockLock.ReleaseWrite(_rec, false);
        }
    }

    [Test]
    public void ReentrantRead_SeeingAnotherThreadsTentativeIncrement_DoesNotPassAnActiveWriter()
    {
        // Contract (spin model F1): a slot's byte may be 1 only because another thread of the process is between its
        // 0→1 CAS and its back-out. A "re-entrant" read on that byte must not enter while a writer is active.
        Assert.That(Write(1), Is.EqualTo(LockStatus.Acquired));
        TestRecords.AddToByte(_rec, S(0), 1); // thread A of slot 0: tentative increment, back-out pending
        Assert.That(Read(0, 50), Is.EqualTo(LockStatus.Timeout), "thread B of slot 0 must not read under the active writer");
        TestRecords.AddToByte(_rec, S(0), -1); // A backs out
        BlockLock.ReleaseWrite(_rec, false);
        Assert.That(Read(0), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseRead(_rec, S(0));
    }

    [Test]
    public void ScrubSlot_OfAWriterThatDiedBetweenReleaseAndWake_StillWakesSleepers()
    {
        // Contract (spin model F2): recovery wakes sleepers even when the dead slot held nothing any more.
        var policy = new LockWaitPolicy { SpinTicks = 0, SleepSliceNs = 30_000_000_000 };
        Assert.That(Write(2), Is.EqualTo(LockStatus.Acquired));
        var reader = Task.Run(() =>
        {
            var w = new LockWait(policy, TimeSpan.FromSeconds(60), default);
            return BlockLock.AcquireRead(_rec, 5, ref w);
        });
        SpinUntil(() => (_rec->Seq & 1) != 0, "reader to sleep");
        Volatile.Write(ref _rec->Owner, 0u); // the writer released... and died before its wake
        var r = BlockLock.ScrubSlot(_rec, S(2));
        Assert.That(r.Any, Is.False);
        Assert.That(reader.Wait(TimeSpan.FromSeconds(10)), Is.True, "woken by recovery, not by a 30 s sleep slice");
        BlockLock.ReleaseRead(_rec, S(5));
    }

    [Test]
    public void Stress_ManySlots_MutualExclusionHolds()
    {
        // Contract: under contention from 8 slots, a writer is never inside with anyone else.
        int inside = 0; // >0: readers inside; -1: a writer inside
        int violations = 0;
        var deadline = Stopwatch.StartNew();
        var threads = Enumerable.Range(0, 8).Select(slot => Task.Run(() =>
        {
            var rnd = new Random(slot);
            while (deadline.ElapsedMilliseconds < 1000)
            {
                if (rnd.Next(4) == 0)
                {
                    if (Write(slot, 10_000) != LockStatus.Acquired) { Interlocked.Increment(ref violations); continue; }
                    if (Interlocked.CompareExchange(ref inside, -1, 0) != 0) { Interlocked.Increment(ref violations); }
                    Thread.SpinWait(50);
                    Interlocked.Exchange(ref inside, 0);
                    BlockLock.ReleaseWrite(_rec, false);
                }
                else
                {
                    if (Read(slot, 10_000) != LockStatus.Acquired) { Interlocked.Increment(ref violations); continue; }
                    int v = Interlocked.Increment(ref inside);
                    if (v <= 0) { Interlocked.Increment(ref violations); }
                    Thread.SpinWait(20);
                    Interlocked.Decrement(ref inside);
                    BlockLock.ReleaseRead(_rec, S(slot));
                }
            }
        })).ToArray();
        Assert.That(Task.WaitAll(threads, 30_000), Is.True, "no deadlock");
        Assert.That(violations, Is.Zero);
        Assert.That(BlockLock.AnyReaders(_rec), Is.False);
        Assert.That(_rec->Owner, Is.Zero);
        Assert.That(_rec->Waiting, Is.Zero);
    }

    [Test]
    public void Writer_DrainsReadersOnEveryAnnouncedLine_AndReadsOnlyThoseLines()
    {
        // Contract (layout 3): a reader announces its line in ReaderLines before its first increment; a writer drains
        // every reader on an announced line, and a count on a line nobody announced is not looked at (so an
        // uncontended writer reads one line per used line, not per possible reader).
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Read(5), Is.EqualTo(LockStatus.Acquired));
        Assert.That(Write(2, 30), Is.EqualTo(LockStatus.Timeout), "readers on announced lines hold the writer off");
        BlockLock.ReleaseRead(_rec, S(1));
        Assert.That(Write(2, 30), Is.EqualTo(LockStatus.Timeout), "the reader of the other line still holds it off");
        BlockLock.ReleaseRead(_rec, S(5));
        Assert.That(Write(2), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, false);
        if (lines > 1)
        {
            int unannounced = (lines * BlockLockDescriptor.SlotsPerLine) - 2; // on the last line, which no test slot used
            Assume.That(_rec->ReaderLines & (1UL << (unannounced >> 6)), Is.Zero);
            TestRecords.AddToByte(_rec, unannounced, 1);
            Assert.That(BlockLock.AnyReaders(_rec), Is.False, "a line that ReaderLines does not name is not read");
            TestRecords.AddToByte(_rec, unannounced, -1);
        }
    }

    [Test]
    public void WaitingWriters_OfOneLine_KeepTheLineBitUntilTheLastOneLeaves()
    {
        // Contract: Waiting is one bit per reader line; a slot's own flag says it waits. When one of two waiting slots
        // of a line stops waiting, the bit stays (the other still waits); when the last stops, it is cleared.
        int a = S(3), b = a + 1; // two slots of one line
        Assert.That(Write(7), Is.EqualTo(LockStatus.Acquired)); // the block is held
        var wa = Task.Run(() => WriteSlot(a, _gate));
        var wb = Task.Run(() => WriteSlot(b, new object())); // another process: its own gate
        SpinUntil(() => TestRecords.Byte(_rec, a) == BlockLockDescriptor.SlotWaitFlag && TestRecords.Byte(_rec, b) == BlockLockDescriptor.SlotWaitFlag, "both writers to wait");
        Assert.That(_rec->Waiting, Is.EqualTo(1UL << (a >> 6)));
        Assert.That(Read(8, 30), Is.EqualTo(LockStatus.Timeout), "a new reader queues behind the waiting writers");
        BlockLock.ReleaseWrite(_rec, false); // one of a, b gets it; the other still waits
        SpinUntil(() => wa.IsCompleted || wb.IsCompleted, "one writer to get the block");
        Assert.That(_rec->Waiting, Is.EqualTo(1UL << (a >> 6)), "the other writer of the line still waits");
        BlockLock.ReleaseWrite(_rec, false);
        Assert.That(Task.WaitAll([wa, wb], 10_000), Is.True);
        Assert.That((wa.Result, wb.Result), Is.EqualTo((LockStatus.Acquired, LockStatus.Acquired)));
        BlockLock.ReleaseWrite(_rec, false);
        Assert.That(_rec->Waiting, Is.Zero);
        Assert.That(TestRecords.Byte(_rec, a) | TestRecords.Byte(_rec, b), Is.Zero);
    }

    private LockStatus WriteSlot(int recordSlot, object gate)
    {
        var w = new LockWait(_policy, TimeSpan.FromSeconds(10), default);
        return BlockLock.AcquireWrite(_rec, recordSlot, gate, ref _waiters[recordSlot], ref w);
    }

    [Test]
    public void RefreshWaiting_ClearsALineBitThatNoSlotFlags_AndKeepsOneThatASlotFlags()
    {
        // Contract (recovery): a slot that died between clearing its flag and clearing its line's bit leaves the bit
        // with no waiter; ScrubSlot and the repair clear it. A bit whose line has a flagged slot stays.
        int dead = S(2), waiter = S(4);
        Interlocked.Or(ref _rec->Waiting, 1UL << (dead >> 6)); // flag already cleared, bit left behind
        Assert.That(Read(1, 30), Is.EqualTo(LockStatus.Timeout), "the stale bit keeps new readers out");
        BlockLock.ScrubSlot(_rec, dead);
        Assert.That(_rec->Waiting, Is.Zero);
        Assert.That(Read(1), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseRead(_rec, S(1));
        TestRecords.ForgeWaiting(_rec, waiter);
        BlockLock.RefreshWaiting(_rec, waiter >> 6);
        Assert.That(_rec->Waiting, Is.EqualTo(1UL << (waiter >> 6)), "a flagged slot keeps its line's bit");
    }

    [Test]
    public void RefreshWaiting_PutsBackABitLostWhileASlotStillWaits()
    {
        // Contract (spin model F4b): a refresher killed between its And and its OR-back leaves the bit clear while a
        // slot of the line waits; the next refresh (the scrub of the dead slot, a repair, any waiter's) sets it again.
        int waiter = S(4);
        TestRecords.ForgeWaiting(_rec, waiter);
        Interlocked.And(ref _rec->Waiting, 0UL); // the lost bit
        BlockLock.RefreshWaiting(_rec, waiter >> 6);
        Assert.That(_rec->Waiting, Is.EqualTo(1UL << (waiter >> 6)));
    }

    [Test]
    public void Read_OverAForgedCountOnAnUnannouncedLine_AnnouncesTheLine_SoAWriterWaitsForIt()
    {
        // Contract (spin model F5): a count above 0 that the reader did not make (a forged broker-slot byte) must not
        // stand for "this line is announced": a read on top of it announces the line, so a writer drains it.
        int reader = (lines * BlockLockDescriptor.SlotsPerLine) - 1; // the broker's slot, on the last line
        TestRecords.AddToByte(_rec, reader, 1); // forged, line not announced
        Assume.That(_rec->ReaderLines & (1UL << (reader >> 6)), Is.Zero);
        Assert.That(BlockLock.TryAcquireReadFast(_rec, reader), Is.True);
        Assert.That(_rec->ReaderLines & (1UL << (reader >> 6)), Is.Not.Zero, "the read announced its line");
        Assert.That(Write(1, 30), Is.EqualTo(LockStatus.Timeout), "the writer sees the read");
        BlockLock.ReleaseRead(_rec, reader);
        TestRecords.AddToByte(_rec, reader, -1);
        Assert.That(Write(1), Is.EqualTo(LockStatus.Acquired));
        BlockLock.ReleaseWrite(_rec, false);
    }

    private static void SpinUntil(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.ElapsedMilliseconds > 10_000)
            {
                Assert.Fail($"timed out waiting for {what}");
            }

            Thread.Sleep(1);
        }
    }
}
