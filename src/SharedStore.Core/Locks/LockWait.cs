using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>Per-client wait policy shared by every lock wait of that client.</summary>
internal sealed class LockWaitPolicy
{
    /// <summary>Default spin before sleeping: 30 µs, a bit more than one futex wake of a halted vCPU (~22 µs here),
    /// so a hand-off within that window costs a cache-line transfer instead of a hypervisor wake.</summary>
    public static readonly long DefaultSpinTicks = Stopwatch.Frequency * 30 / 1_000_000;

    /// <summary>Longest single FUTEX_WAIT: waiters re-check cancellation and broker loss at least this often.</summary>
    public const long MaxSleepSliceNs = 50_000_000; // 50 ms

    public long SpinTicks { get; init; } = DefaultSpinTicks;

    /// <summary>Longest single FUTEX_WAIT of this client (default <see cref="MaxSleepSliceNs"/>; tests lengthen it to
    /// prove a wake-up came from a FUTEX_WAKE rather than from the slice ending).</summary>
    public long SleepSliceNs { get; init; } = MaxSleepSliceNs;

    // One pinned word rather than a field: libsharedstore's C get path reads it without entering the runtime
    // (BrokerLostWord). The array keeps the word alive and pinned as long as the policy lives; reads and writes go
    // through the pointer (one load, no bounds check: C#'s Get checks it on every call).
    private readonly int[] _brokerLostArray = GC.AllocateArray<int>(1, pinned: true);
    private readonly unsafe int* _brokerLost;

    public unsafe LockWaitPolicy() => _brokerLost = (int*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_brokerLostArray));

    /// <summary>Set when the broker connection is lost: every waiter gives up with BrokerLost within one slice.</summary>
    public unsafe bool BrokerLost
    {
        get => Volatile.Read(ref *_brokerLost) != 0;
        set => Volatile.Write(ref *_brokerLost, value ? 1 : 0);
    }

    /// <summary>The word behind <see cref="BrokerLost"/> (non-zero once lost), valid while this policy is reachable:
    /// the C library's object entries point at it (src/SharedStore.Native/Handles/FastPath.cs).</summary>
    internal unsafe int* BrokerLostWord => _brokerLost;

    /// <summary>How long a waiter waits on one block before it asks the broker to check the block's lock record
    /// (<see cref="ILockRepairRequester"/>), and again after every further such interval: 250 ms. This is the bound
    /// on how long a word naming a slot with no live member (a forgery, docs/ARCHITECTURE.md §2) can keep a waiter
    /// out. Healthy hand-offs take microseconds (a futex wake here ~22 µs, a 64 MiB write ~5–15 ms, a write-back
    /// batch ~1 ms), so only waits on application-length holds ever ask, each costing the broker one record check.
    /// Longer would leave a wedged caller waiting longer; much shorter would turn ordinary long holds into a stream
    /// of checks.</summary>
    public static readonly long DefaultRepairAfterTicks = Stopwatch.Frequency / 4;

    /// <summary>See <see cref="DefaultRepairAfterTicks"/>; tests may change it.</summary>
    public long RepairAfterTicks { get; init; } = DefaultRepairAfterTicks;
}

/// <summary>Who a lock waiter asks to check a block it has waited on for <see cref="LockWaitPolicy.RepairAfterTicks"/>:
/// a client asks its broker over the socket (a <c>lock_check</c> request, answered without waiting), the broker's own
/// threads call the check directly. The check clears what belongs to no live member and wakes sleepers
/// (<see cref="BlockLock.ClearUnowned"/>); the waiter then re-checks its condition as after any wake.</summary>
internal unsafe interface ILockRepairRequester
{
    /// <summary>Asks for <paramref name="rec"/> to be checked. Must not block for long and must not throw.</summary>
    void RequestCheck(BlockLockRecord* rec);
}

/// <summary>The budget of one blocking call: a deadline, a token and the client's policy. Passed by ref so the
/// spin/sleep loop allocates nothing.</summary>
internal unsafe struct LockWait
{
    private readonly long _timeoutTicks; // Stopwatch ticks; long.MaxValue = infinite
    private readonly CancellationToken _token;
    private readonly LockWaitPolicy _policy;
    private long _deadline; // 0 until the first wait: the uncontended path never reads the clock
    private readonly ILockRepairRequester? _repair;
    private BlockLockRecord* _repairRecord; // the record the current repair clock runs for
    private long _repairDue;                // when the waiter next asks for _repairRecord to be checked
    private static readonly long s_maxSliceTicks = LockWaitPolicy.MaxSleepSliceNs * Stopwatch.Frequency / 1_000_000_000;

    /// <param name="policy">The client's wait policy.</param>
    /// <param name="timeout">The whole call's budget.</param>
    /// <param name="token">Cancels the wait.</param>
    /// <param name="repair">Asked to check a block this wait has waited on for
    /// <see cref="LockWaitPolicy.RepairAfterTicks"/>; null: never ask.</param>
    public LockWait(LockWaitPolicy policy, TimeSpan timeout, CancellationToken token, ILockRepairRequester? repair = null)
    {
        _policy = policy;
        _token = token;
        _repair = repair;
        _timeoutTicks = timeout == Timeout.InfiniteTimeSpan || timeout == TimeSpan.MaxValue
            ? long.MaxValue
            : Math.Max(0, (long)(timeout.TotalSeconds * Stopwatch.Frequency));
        _deadline = 0;
        _repairRecord = null;
        _repairDue = 0;
    }

    /// <summary>Spins, then sleeps on the record's Seq futex until <paramref name="ready"/> holds or the budget ends.</summary>
    public LockStatus WaitFor(BlockLockRecord* rec, delegate*<BlockLockRecord*, int, bool> ready, int slot)
    {
        long now = Stopwatch.GetTimestamp();
        if (_deadline == 0)
        {
            _deadline = _timeoutTicks == long.MaxValue ? long.MaxValue : now + _timeoutTicks;
        }

        if (rec != _repairRecord)
        {
            // The repair clock runs per record, and across the several WaitFor calls one acquisition may make on it
            // (a Dekker back-out retries): a word that keeps a waiter out for the whole interval is checked.
            _repairRecord = rec;
            _repairDue = now + _policy.RepairAfterTicks;
        }

        long spinUntil = now + _policy.SpinTicks;
        while (true)
        {
            if (ready(rec, slot))
            {
                return LockStatus.Acquired;
            }

            if (Stopwatch.GetTimestamp() >= spinUntil)
            {
                break;
            }

            if (_timeoutTicks == 0)
            {
                return LockStatus.Timeout; // a zero timeout tries once, then spins only as long as the budget allows
            }

            Thread.SpinWait(8);
        }

        while (true)
        {
            int v = Volatile.Read(ref rec->Seq);
            if ((v & BlockLockDescriptor.SeqSleepersBit) == 0)
            {
                // Announce a sleeper with a locked RMW so the re-check below is ordered after it.
                int next = v | BlockLockDescriptor.SeqSleepersBit;
                if (Interlocked.CompareExchange(ref rec->Seq, next, v) != v)
                {
                    continue;
                }

                v = next;
            }
            else
            {
                // Bit already set by another sleeper: we still need a full fence before the re-check.
                Interlocked.MemoryBarrier();
            }

            if (ready(rec, slot))
            {
                return LockStatus.Acquired;
            }

            LockStatus budget = Check(out long sliceNs);
            if (budget != LockStatus.Acquired)
            {
                return budget;
            }

            if (_repair is not null)
            {
                long left = _repairDue - Stopwatch.GetTimestamp();
                if (left <= 0)
                {
                    // Waited long enough on this block: ask for a check, then look again (the check wakes sleepers
                    // when it clears anything; asking is rate-limited by this clock and by the broker).
                    _repair.RequestCheck(rec);
                    _repairDue = Stopwatch.GetTimestamp() + _policy.RepairAfterTicks;
                    continue;
                }

                if (left < s_maxSliceTicks)
                {
                    sliceNs = Math.Min(sliceNs, Math.Max(1000, left * 1_000_000_000 / Stopwatch.Frequency)); // wake up when due
                }
            }

            Interop.Libc.FutexWait(&rec->Seq, v, sliceNs);
        }
    }

    /// <summary>Acquired while the budget lasts; otherwise the reason it ended. Also yields the next sleep slice.</summary>
    public readonly LockStatus Check(out long sliceNs)
    {
        sliceNs = _policy.SleepSliceNs;
        if (_token.IsCancellationRequested)
        {
            return LockStatus.Canceled;
        }

        if (_policy.BrokerLost)
        {
            return LockStatus.BrokerLost;
        }

        if (_deadline != long.MaxValue)
        {
            long left = _deadline - Stopwatch.GetTimestamp();
            if (left <= 0)
            {
                return LockStatus.Timeout;
            }

            // Convert only a remainder shorter than one slice: left * 1e9 overflows long from ~9.2 s on.
            if (left < s_maxSliceTicks)
            {
                sliceNs = Math.Max(1000, left * 1_000_000_000 / Stopwatch.Frequency);
            }
        }

        return LockStatus.Acquired;
    }
}
