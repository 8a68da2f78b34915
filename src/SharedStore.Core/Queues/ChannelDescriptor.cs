using System.Runtime.InteropServices;

namespace SharedStore.Queues;

/// <summary>
/// Layout of a client's asynchronous channel, version 1: one memfd per client process that opened the asynchronous
/// path, created by the broker and mapped read-write by both (docs/ARCHITECTURE.md §9). It holds the submission ring
/// (<see cref="RingDescriptor"/>, client → broker), one status entry per ring slot (broker → client, plus the
/// client's cancel CAS), and the staging area that carries payloads too large for a slot and rented zero-copy buffers.
/// <code>
///  0        8        12       16       20       24               32               40               48           64
///  +--------+--------+--------+--------+--------+----------------+----------------+----------------+------------+
///  | Magic  | Version| Slots  | SlotSz | BrkPid | StagingSize    | RingOffset     | StatusOffset   | StagingOff |  (broker, once)
///  +--------+--------+--------+--------+--------+----------------+----------------+----------------+------------+
///  64:  CompletedThrough (u64) — every op at a position below it is terminal                 broker (locked store)
///  72:  CompletionWord (i32 futex) — bit 0: a client thread sleeps waiting for completions   client sets, broker clears
///  128: Doorbell {Seq, Flags} — the broker's applier sleeps here                             applier sets, client rings
///  192: ConsumerState (i32) — 1 while the broker's applier runs, 2 once it stopped for good  broker
///  4096:          ring (RingDescriptor layout: header + SlotCount × SlotSize)
///  StatusOffset:  SlotCount × 16 B status entries {Word u64, Result i64}, entry i ↔ ring slot i
///  StagingOffset: StagingSize bytes of staging (client-allocated, broker reads or fills)
/// </code>
/// Operation ids are ring positions: the op submitted in ring position p has status entry p mod SlotCount.
/// A status word is <c>(p &lt;&lt; 4) | state</c> (<see cref="OpState"/>); a word naming an older position means op p is
/// still pending in the ring. Only two writers ever CAS a word from "pending": the applier (to Applying) and the
/// client's cancel (to CancelRequested); exactly one wins, which is what makes cancel all-or-nothing.
/// </summary>
internal static class ChannelDescriptor
{
    public const ulong Magic = 0x3130_4E41_4843_5353; // "SSCHAN01" little-endian
    public const uint LayoutVersion = 1;

    public const int MagicOffset = 0;
    public const int VersionOffset = 8;
    public const int SlotCountOffset = 12;
    public const int SlotSizeOffset = 16;
    public const int BrokerPidOffset = 20;
    public const int StagingSizeOffset = 24;
    public const int RingOffsetOffset = 32;
    public const int StatusOffsetOffset = 40;
    public const int StagingOffsetOffset = 48;
    public const int CompletedThroughOffset = 64;
    public const int CompletionWordOffset = 72;
    public const int DoorbellOffset = 128;
    public const int ConsumerStateOffset = 192;
    public const int HeaderSize = 4096;
    public const int RingOffset = HeaderSize;
    public const int StatusEntrySize = 16;

    /// <summary>Default ring: 16 Ki slots of 128 B (2 MiB), so a 64-byte write fits one slot with its header.</summary>
    public const int DefaultSlotCount = 16 * 1024;
    public const int DefaultSlotSize = 128;

    /// <summary>Default staging: 8 MiB per client. Small on purpose: staging is written by the client and read by the
    /// broker in a ring, and a ring that fits the cache makes 1 MiB awrites 1.5× faster here than a 32 MiB one
    /// (awrite-1mib: 10.8 against 6.7 GB/s); larger writes are chunked.</summary>
    public const long DefaultStagingSize = 8L << 20;

    public const int ConsumerRunning = 1;
    public const int ConsumerStopped = 2;

    public static long StatusOffsetFor(int slotCount, int slotSize) =>
        RoundUp(RingOffset + RingDescriptor.LengthFor(slotCount, slotSize), 4096);

    public static long StagingOffsetFor(int slotCount, int slotSize) =>
        RoundUp(StatusOffsetFor(slotCount, slotSize) + ((long)slotCount * StatusEntrySize), 1 << 21);

    public static long LengthFor(int slotCount, int slotSize, long stagingSize) =>
        StagingOffsetFor(slotCount, slotSize) + RoundUp(stagingSize, 4096);

    private static long RoundUp(long n, long to) => (n + to - 1) & ~(to - 1);
}

/// <summary>Direct view of the channel header; offsets pinned to <see cref="ChannelDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct ChannelHeader
{
    [FieldOffset(ChannelDescriptor.MagicOffset)] public ulong Magic;
    [FieldOffset(ChannelDescriptor.VersionOffset)] public uint Version;
    [FieldOffset(ChannelDescriptor.SlotCountOffset)] public int SlotCount;
    [FieldOffset(ChannelDescriptor.SlotSizeOffset)] public int SlotSize;
    [FieldOffset(ChannelDescriptor.BrokerPidOffset)] public int BrokerPid;
    [FieldOffset(ChannelDescriptor.StagingSizeOffset)] public long StagingSize;
    [FieldOffset(ChannelDescriptor.RingOffsetOffset)] public long RingOffset;
    [FieldOffset(ChannelDescriptor.StatusOffsetOffset)] public long StatusOffset;
    [FieldOffset(ChannelDescriptor.StagingOffsetOffset)] public long StagingOffset;
    [FieldOffset(ChannelDescriptor.CompletedThroughOffset)] public long CompletedThrough;
    [FieldOffset(ChannelDescriptor.CompletionWordOffset)] public int CompletionWord;
    [FieldOffset(ChannelDescriptor.DoorbellOffset)] public Doorbell Doorbell;
    [FieldOffset(ChannelDescriptor.ConsumerStateOffset)] public int ConsumerState;
}

/// <summary>One status entry: the state word and the operation's return value (written before a terminal word).</summary>
[StructLayout(LayoutKind.Explicit, Size = ChannelDescriptor.StatusEntrySize)]
internal struct OpStatusEntry
{
    [FieldOffset(0)] public ulong Word;
    [FieldOffset(8)] public long Result;

    public const int StateBits = 4;
    public const ulong StateMask = (1 << StateBits) - 1;

    public static ulong Make(long position, OpState state) => ((ulong)position << StateBits) | (ulong)state;

    public static long PositionOf(ulong word) => (long)(word >> StateBits);

    public static OpState StateOf(ulong word) => (OpState)(word & StateMask);

    /// <summary>Whether <paramref name="word"/> says op <paramref name="position"/> has not been picked up yet: the
    /// entry still belongs to an older op (always terminal), or is the zero word of a fresh channel.</summary>
    public static bool IsPendingFor(ulong word, long position) =>
        PositionOf(word) < position || word == 0;
}

/// <summary>States of a status word. Pending is implicit (the word still names an older position).</summary>
internal enum OpState : byte
{
    None = 0,
    Applying = 1,
    CancelRequested = 2,
    Done = 3,
    Canceled = 4,
    Failed = 5,
}

/// <summary>
/// A submission message, the payload of one ring slot, version 1 (40 bytes, then inline data).
/// <code>
///  0     1      2        4        8        12       16               24               32               40
///  +-----+------+--------+--------+--------+--------+----------------+----------------+----------------+
///  |Kind |Flags | rsvd   | ContId | ObjId  | Length | Offset         | StagingOffset  | TotalLength    | inline data…
///  +-----+------+--------+--------+--------+--------+----------------+----------------+----------------+
/// </code>
/// Kind: 1 write, 2 read (the broker copies object → staging). Flags: Staged (data at StagingOffset, else inline),
/// First / Last (a write split into chunks: First carries the whole range in Offset..Offset+TotalLength and every
/// chunk holds the write locks of that whole range, so the write is applied as a whole).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = HeaderSize)]
internal struct ChannelMessage
{
    public const int HeaderSize = 40;
    public const byte KindWrite = 1;
    public const byte KindRead = 2;
    public const byte FlagStaged = 1;
    public const byte FlagFirst = 2;
    public const byte FlagLast = 4;
    public const byte FlagWhole = FlagFirst | FlagLast;

    [FieldOffset(0)] public byte Kind;
    [FieldOffset(1)] public byte Flags;
    [FieldOffset(4)] public uint ContainerId;
    [FieldOffset(8)] public uint ObjectId;
    [FieldOffset(12)] public int Length;
    [FieldOffset(16)] public long Offset;
    [FieldOffset(24)] public long StagingOffset;
    [FieldOffset(32)] public long TotalLength;
}
