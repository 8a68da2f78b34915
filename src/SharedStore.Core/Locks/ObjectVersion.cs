using System.Diagnostics;
using System.Runtime.CompilerServices;
using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>What a <see cref="ObjectVersion.WaitForChange"/> came back with.</summary>
internal enum VersionWaitStatus
{
    Changed,
    Timeout,
    Canceled,
    BrokerLost,
}

/// <summary>
/// The object version protocol (layout: <see cref="ObjectVersionDescriptor"/>; docs/ARCHITECTURE.md §4.1). Every
/// writer of object data (a client's <c>Write</c>, the broker's applier of asynchronous writes, the broker's durable
/// restore) goes through <see cref="BeginWrite"/> and <see cref="Publish"/>; readers read with one load, and waiters
/// sleep on the version word's low half.
/// <para><b>Publication.</b> A writer holds the write locks of blocks [first, last] from before <see cref="BeginWrite"/>
/// until after <see cref="Publish"/>. (1) BeginWrite stores Pending into their BlockVersions; (2) the writer copies;
/// (3) Publish adds 2 to the version word (a locked add: the new version is unique and totally ordered with every
/// other writer's add) and (4) stores the new version v into the BlockVersions; (5) the locks are released; (6) if the
/// add's result had the sleepers bit, the writer clears it and wakes. Stores are not reordered with other stores on
/// x86 (and Volatile.Write is a release), so a reader that loads a version ≥ v also sees every byte the write of v
/// copied, and a write killed during (2) never advances the version (its blocks stay Pending and are marked torn by
/// recovery). Writes of one block are serialized by its write lock and take their versions in lock order, so a
/// block's version never goes back; a block changed by a write of version v &gt; s reads either ≥ v or Pending
/// whenever it is read after that write's add, so <see cref="ChangedSince"/> never misses it (it may report a block
/// whose write is in progress).</para>
/// <para><b>No lost wake-up</b> (the block locks' Seq protocol, §4, on one word). A waiter that saw version L with the
/// bit clear sets it with a CAS from exactly that value (a failed CAS means the word changed: it looks again), then
/// FUTEX_WAITs for that value; with the bit already set it waits on the value it read. Either way the kernel queues it
/// only if the word still equals E = (L &lt;&lt; 1) | 1. After that, the first change of the word is either a writer's
/// add — whose result then carries the bit, so that writer clears it and wakes — or a waker's And clearing the bit,
/// which that waker follows with FUTEX_WAKE. So a queued waiter is always woken, and one whose wait finds another
/// value returns EAGAIN at once. A write that finds the bit clear makes no system call: a write with no sleeper
/// costs one locked add.</para>
/// <para><b>Dead parties.</b> A waiter killed asleep leaves at most the bit: the next writer makes one needless
/// FUTEX_WAKE and clears it. A writer killed between its add and its wake leaves sleepers queued; they wake at
/// the end of their sleep slice (<see cref="LockWaitPolicy.SleepSliceNs"/>, 50 ms) and see the new version. The next
/// writer wakes them sooner only while the bit is still set: a writer killed between its And and its FUTEX_WAKE has
/// cleared it, so only the slice ends that sleep (finding V1 of model/version.pml, docs/MODEL.md). A writer killed
/// before its add leaves the version as it was (nothing completed) and its blocks Pending and torn.</para>
/// </summary>
internal static unsafe class ObjectVersion
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long* Word(BlockLockRecord* locks) => (long*)((byte*)locks + ObjectVersionDescriptor.VersionWordOffset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long* BlockVersion(BlockLockRecord* rec) => (long*)((byte*)rec + ObjectVersionDescriptor.BlockVersionOffset);

    /// <summary>The object's current version: one load, no system call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Read(BlockLockRecord* locks) => Volatile.Read(ref *Word(locks)) >> 1;

    /// <summary>The version of the last completed write of block <paramref name="block"/>, or
    /// <see cref="ObjectVersionDescriptor.Pending"/>.</summary>
    public static long ReadBlock(ObjectView view, long block) => Volatile.Read(ref *BlockVersion(view.Record(block)));

    /// <summary>Step 1: the caller holds the write locks of [first, last] and is about to copy into them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a 64-byte write pays for every call (bench write-64b-nowaiter)
    public static void BeginWrite(ObjectView view, long first, long last)
    {
        for (long b = first; b <= last; b++)
        {
            // Release store: program order before the copy; a reader that sees the copy's bytes under a later lock
            // sees Pending or the final version, never the old one.
            Volatile.Write(ref *BlockVersion(view.Record(b)), ObjectVersionDescriptor.Pending);
        }
    }

    /// <summary>Steps 3 and 4: the data of [first, last] is in place and its write locks are still held. Returns the
    /// version word after the add, for <see cref="WakeIfSleepers"/> once the locks are released.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a 64-byte write pays for every call (bench write-64b-nowaiter)
    public static long Publish(ObjectView view, long first, long last)
    {
        // Locked add: sequentially consistent with the waiters' CAS (the Dekker pair of the wake argument).
        long word = Interlocked.Add(ref *Word(view.Locks), ObjectVersionDescriptor.VersionIncrement);
        long v = word >> 1;
        for (long b = first; b <= last; b++)
        {
            Volatile.Write(ref *BlockVersion(view.Record(b)), v);
        }

        return word;
    }

    /// <summary>
    /// A replica's steps 3 and 4 (docs/ARCHITECTURE.md §14): the block's data, the owner's version
    /// <paramref name="ownerVersion"/> of it, is in place and its write lock is still held (step 1 stored Pending).
    /// The block takes the owner's version instead of a new local one, so that a replica's versions are the owner's;
    /// the version word is not added to: it advances only by <see cref="AdvanceTo"/>, once every block up to a version
    /// is applied. The replica applies a block only with a version above the one it applied before, so the block's
    /// version still never goes back (<see cref="ChangedSince"/>'s argument holds unchanged).
    /// </summary>
    public static void PublishBlockAt(ObjectView view, long block, long ownerVersion) =>
        Volatile.Write(ref *BlockVersion(view.Record(block)), ownerVersion);

    /// <summary>
    /// A replica's watermark: raises the object's version to <paramref name="version"/> (never lowers it), then wakes
    /// sleepers. The same no-lost-wake-up argument as a writer's add: the CAS replaces exactly the word it read; if that
    /// word had the sleepers bit, the new word has it clear and this call wakes every sleeper (whoever clears the bit
    /// wakes); a waiter whose own CAS then fails looks again and sees the new version. The bytes the version claims
    /// were stored under the blocks' write locks before this call (the caller applied them first, in stream order).
    /// </summary>
    public static void AdvanceTo(BlockLockRecord* locks, long version)
    {
        long* w = Word(locks);
        while (true)
        {
            long old = Volatile.Read(ref *w);
            if ((old >> 1) >= version)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref *w, version << 1, old) == old)
            {
                if ((old & ObjectVersionDescriptor.SleepersBit) != 0)
                {
                    Interop.Libc.FutexWake((int*)w, int.MaxValue);
                }

                return;
            }
        }
    }

    /// <summary>Step 6: wakes the object's version waiters when the add of <see cref="Publish"/> saw one (no system
    /// call otherwise).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WakeIfSleepers(BlockLockRecord* locks, long publishedWord)
    {
        if ((publishedWord & ObjectVersionDescriptor.SleepersBit) != 0)
        {
            WakeAll(locks);
        }
    }

    /// <summary>Clears the sleepers bit, then wakes every sleeper (the And before the wake is what the argument
    /// needs: whoever clears the bit wakes).</summary>
    public static void WakeAll(BlockLockRecord* locks)
    {
        long* w = Word(locks);
        Interlocked.And(ref *w, ~ObjectVersionDescriptor.SleepersBit);
        Interop.Libc.FutexWake((int*)w, int.MaxValue);
    }

    /// <summary>Blocks changed by writes of a version above <paramref name="since"/> (and blocks being written now),
    /// in ascending order, appended to <paramref name="into"/>.</summary>
    public static void ChangedSince(ObjectView view, long since, List<long> into)
    {
        for (long b = 0; b < view.BlockCount; b++)
        {
            if (Volatile.Read(ref *BlockVersion(view.Record(b))) > since)
            {
                into.Add(b);
            }
        }
    }

    /// <summary>
    /// Waits until the object's version differs from <paramref name="lastSeen"/>: spins for the policy's spin time,
    /// then sleeps on the version word in slices of at most <see cref="LockWaitPolicy.SleepSliceNs"/> (to notice
    /// cancellation and broker loss, and to outlive a writer killed before its wake).
    /// </summary>
    /// <param name="locks">The object's first block lock record (its version word).</param>
    /// <param name="lastSeen">The version the caller has seen.</param>
    /// <param name="timeoutTicks">Stopwatch ticks; long.MaxValue = infinite.</param>
    /// <param name="token">Ends the wait (woken at once through a FUTEX_WAKE of the word).</param>
    /// <param name="policy">The connection's spin time, sleep slice and broker-lost flag.</param>
    /// <param name="version">The new version; <paramref name="lastSeen"/> unless Changed.</param>
    public static VersionWaitStatus WaitForChange(BlockLockRecord* locks, long lastSeen, long timeoutTicks, CancellationToken token, LockWaitPolicy policy, out long version)
    {
        long* word = Word(locks);
        long w = Volatile.Read(ref *word);
        if ((w >> 1) != lastSeen)
        {
            version = w >> 1;
            return VersionWaitStatus.Changed;
        }

        long start = Stopwatch.GetTimestamp();
        long deadline = timeoutTicks == long.MaxValue ? long.MaxValue : start + timeoutTicks;
        long spinEnd = Math.Min(deadline, start + policy.SpinTicks);
        while (Stopwatch.GetTimestamp() < spinEnd)
        {
            // A short, fixed pause between looks, as the block locks' spin (LockWait): an exponential back-off to
            // SpinWait(1024) (tens of µs) made a spinning waiter see a write 20 µs late (bench notify-xproc-spinning).
            Thread.SpinWait(8);
            w = Volatile.Read(ref *word);
            if ((w >> 1) != lastSeen)
            {
                version = w >> 1;
                return VersionWaitStatus.Changed;
            }
        }

        using var wakeOnCancel = token.CanBeCanceled
            ? token.UnsafeRegister(static s => Interop.Libc.FutexWake((int*)(nint)s!, int.MaxValue), (nint)word)
            : default;
        while (true)
        {
            w = Volatile.Read(ref *word);
            if ((w >> 1) != lastSeen)
            {
                version = w >> 1;
                return VersionWaitStatus.Changed;
            }

            version = lastSeen;
            if (token.IsCancellationRequested)
            {
                return VersionWaitStatus.Canceled;
            }

            if (policy.BrokerLost)
            {
                return VersionWaitStatus.BrokerLost;
            }

            long now = Stopwatch.GetTimestamp();
            if (now >= deadline)
            {
                return VersionWaitStatus.Timeout;
            }

            if ((w & ObjectVersionDescriptor.SleepersBit) == 0)
            {
                // Announce the sleeper with a CAS from exactly the value seen: a writer's add in between fails it.
                long seen = Interlocked.CompareExchange(ref *word, w | ObjectVersionDescriptor.SleepersBit, w);
                if (seen != w)
                {
                    continue;
                }

                w |= ObjectVersionDescriptor.SleepersBit;
            }

            long sliceNs = policy.SleepSliceNs;
            if (deadline != long.MaxValue)
            {
                long leftNs = (long)((deadline - now) * (1_000_000_000.0 / Stopwatch.Frequency));
                sliceNs = Math.Clamp(leftNs, 1, sliceNs);
            }

            Interop.Libc.FutexWait((int*)word, (int)w, sliceNs); // EAGAIN, EINTR, ETIMEDOUT, woken: look again
        }
    }
}
