using System.Runtime.InteropServices;

namespace SharedStore.Queues;

/// <summary>
/// Layout of a single-producer single-consumer submission ring in shared memory, version 1. One ring per client
/// process: the client produces, the broker consumes (docs/ARCHITECTURE.md §9.2 "Channel layout", where the ring sits
/// at RingOffset, and §9.3 "Submission and the lock-free argument").
/// <code>
///  0        8        12       16       20       24                                               64
///  +--------+--------+--------+--------+--------+-------------------------------------------------+
///  | Magic  | Version| Slots  | SlotSz | ProdPid| reserved                                        |  header (creator, once)
///  +--------+--------+--------+--------+--------+-------------------------------------------------+
///  64: Tail (u64)   — producer only; 120: pad to 128                                                 line 1
///  128: Head (u64)  — consumer only; 136: ProducerWaits (i32 futex word) — producer sets, consumer clears;  line 2
///  256: Slots × SlotSize bytes; slot = [Length:u32][payload …]
/// </code>
/// Publication rule: slots in [Head, Tail) are complete; the producer fills slots and only then stores Tail (release),
/// the consumer reads Tail (acquire), consumes, then stores Head with a locked instruction (release, and ordered before
/// its read of ProducerWaits: §9.3). Positions are 64-bit and never wrap.
/// </summary>
internal static class RingDescriptor
{
    public const ulong Magic = 0x3130_474E_4952_5353; // "SSRING01"
    public const uint LayoutVersion = 1;
    public const int MagicOffset = 0;
    public const int VersionOffset = 8;
    public const int SlotCountOffset = 12;
    public const int SlotSizeOffset = 16;
    public const int ProducerPidOffset = 20;
    public const int TailOffset = 64;
    public const int HeadOffset = 128;
    public const int ProducerWaitsOffset = 136;
    public const int SlotsOffset = 256;
    public const int SlotHeaderSize = 4;

    public static long LengthFor(int slotCount, int slotSize) => SlotsOffset + ((long)slotCount * slotSize);
}

/// <summary>Direct view of a ring header; offsets pinned to <see cref="RingDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = RingDescriptor.SlotsOffset)]
internal struct RingHeader
{
    [FieldOffset(RingDescriptor.MagicOffset)] public ulong Magic;
    [FieldOffset(RingDescriptor.VersionOffset)] public uint Version;
    [FieldOffset(RingDescriptor.SlotCountOffset)] public int SlotCount;
    [FieldOffset(RingDescriptor.SlotSizeOffset)] public int SlotSize;
    [FieldOffset(RingDescriptor.ProducerPidOffset)] public int ProducerPid;
    [FieldOffset(RingDescriptor.TailOffset)] public long Tail;
    [FieldOffset(RingDescriptor.HeadOffset)] public long Head;
    [FieldOffset(RingDescriptor.ProducerWaitsOffset)] public int ProducerWaits;
}

/// <summary>The consumer's doorbell: one futex word the consumer sleeps on. Seq bit 0 = "asleep"; Flags bit 0 = the
/// producer process could not register for expedited membarrier, so it fences before reading Seq instead.</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal unsafe struct Doorbell
{
    public const int AsleepBit = 1;
    public const int ProducersFence = 1;

    [FieldOffset(0)] public int Seq;
    [FieldOffset(4)] public int Flags;

    /// <summary>Producer: wakes the consumer. Only the producer whose CAS clears the bit makes the syscall, so a burst
    /// of submissions costs one wake (batched wake-ups).</summary>
    public static void Ring(Doorbell* bell, int seen)
    {
        if (Interlocked.CompareExchange(ref bell->Seq, (seen + 1) & ~AsleepBit, seen) == seen)
        {
            Interop.Libc.FutexWake(&bell->Seq, 1);
        }
    }

    /// <summary>Consumer: sleeps until a producer rings or <paramref name="timeoutNs"/> passes, unless
    /// <paramref name="hasWork"/> finds work after the announcement (see SpscRingProducer's class comment). Returns
    /// without sleeping when the announcement itself races with a producer.</summary>
    public static void Sleep<TState>(Doorbell* bell, TState state, Func<TState, bool> hasWork, long timeoutNs)
    {
        int v = Volatile.Read(ref bell->Seq);
        int asleep = v | AsleepBit;
        if ((v & AsleepBit) == 0 && Interlocked.CompareExchange(ref bell->Seq, asleep, v) != v)
        {
            return; // a producer moved Seq: there is work
        }

        if ((Volatile.Read(ref bell->Flags) & ProducersFence) == 0)
        {
            // Every CPU that runs a registered producer executes a full barrier before this returns (~1 µs here; the
            // unexpedited MEMBARRIER_CMD_GLOBAL waits for an RCU grace period, ~10 ms on this machine).
            _ = Interop.Libc.Membarrier(Interop.Libc.MEMBARRIER_CMD_GLOBAL_EXPEDITED);
        }

        if (!hasWork(state))
        {
            Interop.Libc.FutexWait(&bell->Seq, asleep, timeoutNs);
        }

        // Awake: clear the bit if no producer did, so producers stop paying for the wake path.
        int now = Volatile.Read(ref bell->Seq);
        if ((now & AsleepBit) != 0)
        {
            Interlocked.CompareExchange(ref bell->Seq, (now + 1) & ~AsleepBit, now);
        }
    }

    /// <summary>Producer process, once: registers for MEMBARRIER_CMD_GLOBAL_EXPEDITED, so a consumer's membarrier
    /// orders this process's Tail stores. False when the kernel refuses: set <see cref="ProducersFence"/> then.</summary>
    public static bool RegisterProducerProcess()
    {
        long mask = Interop.Libc.Membarrier(Interop.Libc.MEMBARRIER_CMD_QUERY);
        const int Need = Interop.Libc.MEMBARRIER_CMD_GLOBAL_EXPEDITED | Interop.Libc.MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
        return mask > 0 && (mask & Need) == Need
            && Interop.Libc.Membarrier(Interop.Libc.MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    }
}
