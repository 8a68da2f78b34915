using System.Runtime.InteropServices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Unit tests of <see cref="LockWait"/>'s budget arithmetic.</summary>
[TestFixture]
public unsafe class LockWaitTests
{
    private static bool Ready(BlockLockRecord* rec, int slot) => true;

    [TestCase(10)]
    [TestCase(15)]
    [TestCase(30)]
    [TestCase(3600)]
    [TestCase(86400 * 30)]
    public void Check_TimeoutSecondsLeft_SleepSliceIsTheFullFiftyMilliseconds(int seconds)
    {
        // Bug: the slice was left_ticks * 1e9 / Frequency, which overflows long once more than ~9.2 s are left
        // (Frequency is 1e9 on Linux). The wrapped value was negative for 9.2-18.4 s, 27.7-36.9 s, ... left, so the
        // slice became 1 µs and a waiter with such a timeout spun through FUTEX_WAITs, burning a CPU.
        var rec = TestRecords.Allocate(1);
        try
        {
            *rec = default;
            var wait = new LockWait(new LockWaitPolicy(), TimeSpan.FromSeconds(seconds), default);
            Assert.That(wait.WaitFor(rec, &Ready, 0), Is.EqualTo(LockStatus.Acquired)); // starts the deadline
            Assert.That(wait.Check(out long sliceNs), Is.EqualTo(LockStatus.Acquired));
            Assert.That(sliceNs, Is.EqualTo(LockWaitPolicy.MaxSleepSliceNs));
        }
        finally
        {
            TestRecords.Free(rec);
        }
    }

    [Test]
    public void Check_FewMillisecondsLeft_SliceEndsAtTheDeadline()
    {
        // Contract: the last slice is no longer than what is left of the budget (at least 1 µs).
        var rec = TestRecords.Allocate(1);
        try
        {
            *rec = default;
            var wait = new LockWait(new LockWaitPolicy(), TimeSpan.FromMilliseconds(20), default);
            Assert.That(wait.WaitFor(rec, &Ready, 0), Is.EqualTo(LockStatus.Acquired));
            Assert.That(wait.Check(out long sliceNs), Is.EqualTo(LockStatus.Acquired));
            Assert.That(sliceNs, Is.InRange(1000L, 20_000_000L));
        }
        finally
        {
            TestRecords.Free(rec);
        }
    }
}
