using System.Runtime.InteropServices;

namespace SharedStore.Regions;

/// <summary>
/// Layout of one block's cross-process reader/writer lock record, version 3 (<see cref="LockSegmentDescriptor.LayoutVersion"/>).
/// Every block of every object has one record; they sit back to back in the container segment's lock memfd, each
/// <see cref="RecordSize"/>(<c>lines</c>) bytes long, where <c>lines</c> is the container's number of reader lines
/// (<see cref="LockSegmentDescriptor"/> header: <c>Slots</c> = 64 × lines, <c>RecordSize</c>).
/// <code>
///  0         4         8                   16        20        24                  32                  40                  48      64
///  +---------+---------+-------------------+---------+---------+-------------------+-------------------+-------------------+-------+
///  | Owner   | Flags   | Waiting (bit/line)| Seq     | rsvd    | ReaderLines (bit) | BlockVersion      | VersionWord (rec 0)| rsvd  |  line W: writer side
///  +---------+---------+-------------------+---------+---------+-------------------+-------------------+-------------------+-------+
///  64: reader line 0: one byte per slot 0..63       (bits 0-6: reads held, bit 7: the slot waits to write)
///  128: reader line 1: slots 64..127
///  ...  64 + 64·g: reader line g: slots 64g .. 64g+63                                   (lines = Slots / 64, 1..64)
/// </code>
/// <list type="bullet">
/// <item><b>Reader byte</b> of slot <c>s</c>: byte <c>s &amp; 63</c> of reader line <c>s &gt;&gt; 6</c>, i.e. byte
/// <c>s &amp; 7</c> of the 64-bit word <c>s &gt;&gt; 3</c> counted from <see cref="ReadersOffset"/>. Bits 0-6 count the
/// reads slot <c>s</c> holds (0..<see cref="MaxHoldsPerSlot"/>); bit 7 (<see cref="SlotWaitFlag"/>) is set while the slot
/// has a thread waiting to write. Single writer per byte: the slot's own process (CAS on the word), or the broker's
/// recovery and repair when that process is dead or the slot has no member. The byte is the attribution: no separate
/// bookkeeping can disagree with it.</item>
/// <item><b>ReaderLines</b>: bit <c>g</c> set means reader line <c>g</c> may hold reads. A reader sets its line's bit
/// (a locked OR, only if it is clear) before its first increment; nothing clears it while the record is in use (a
/// freed object's records are zeroed). A writer reads only the lines this word names, so an uncontended write costs
/// the lines that readers have used, not one cache line per possible reader.</item>
/// <item><b>Owner</b>: 0 when free, else <c>(slot + 1) | ActiveBit</c>. Writers CAS 0 → slot+1 (pending: new readers
/// are held off while the present ones drain), set <see cref="OwnerActiveBit"/> once the readers are gone, and store
/// 0 to release. Recovery clears it for a dead slot.</item>
/// <item><b>Flags</b>: <see cref="FlagTorn"/> and <see cref="FlagDirty"/>.</item>
/// <item><b>Waiting</b>: bit <c>g</c> set while some slot of reader line <c>g</c> may have its wait flag set
/// (writer priority: readers that do not already hold the block queue behind it). A waiting writer sets its slot's
/// flag, then the line's bit; the last waiting thread of a slot clears its flag, then clears the bit unless another
/// flag of the line is set, and looks at the line again after clearing it (<c>BlockLock.RefreshWaiting</c>).</item>
/// <item><b>Seq</b>: the futex word. Bit 0 means "someone may sleep on this record"; every wake adds 1 first.</item>
/// </list>
/// Bytes 32–47 hold the object versions: <see cref="ObjectVersionDescriptor"/>.
/// Publication rule: a read is held exactly while its slot's count is non-zero, its line's ReaderLines bit is set and
/// Owner is not active; a write is held exactly while Owner carries the writer's slot with the active bit.
/// </summary>
internal static class BlockLockDescriptor
{
    /// <summary>The writer line: the <see cref="BlockLockRecord"/> struct.</summary>
    public const int WriterLineSize = 64;

    public const int ReaderLineSize = 64;

    public const int OwnerOffset = 0;
    public const int FlagsOffset = 4;
    public const int WaitingOffset = 8;
    public const int SeqOffset = 16;
    public const int ReaderLinesOffset = 24;
    public const int ReadersOffset = WriterLineSize;

    /// <summary>Slots per reader line: one byte each.</summary>
    public const int SlotsPerLine = ReaderLineSize;

    /// <summary>Reader lines at most: one bit each in ReaderLines and Waiting.</summary>
    public const int MaxLines = 64;

    /// <summary>Lock slots per record at most (member slots and the broker's).</summary>
    public const int MaxSlots = SlotsPerLine * MaxLines;

    /// <summary>Member processes per container at most (the last slot is the broker's).</summary>
    public const int MaxMembersLimit = MaxSlots - 1;

    /// <summary>Member processes per container when its creator does not choose: 63, one reader line, a 128-byte
    /// record (the size of layouts 1 and 2).</summary>
    public const int DefaultMaxMembers = SlotsPerLine - 1;

    /// <summary>Bytes of a record with <paramref name="lines"/> reader lines.</summary>
    public static int RecordSize(int lines) => WriterLineSize + (lines * ReaderLineSize);

    /// <summary>Reader lines for <paramref name="maxMembers"/> member slots and the broker's.</summary>
    public static int LinesFor(int maxMembers) => (maxMembers + SlotsPerLine) / SlotsPerLine;

    /// <summary>The slot the broker's asynchronous appliers and write-back lock with: the last of the record.</summary>
    public static int BrokerSlot(int lines) => (lines * SlotsPerLine) - 1;

    /// <summary>Most reads one process may hold on one block at once (seven bits of its byte).</summary>
    public const int MaxHoldsPerSlot = 0x7F;

    /// <summary>Bit 7 of a reader byte: the slot has a thread waiting to write.</summary>
    public const uint SlotWaitFlag = 0x80;

    /// <summary>The read counts of the eight slots of a reader word.</summary>
    public const ulong CountsMask = 0x7F7F_7F7F_7F7F_7F7F;

    /// <summary>The wait flags of the eight slots of a reader word.</summary>
    public const ulong WaitFlagsMask = 0x8080_8080_8080_8080;

    /// <summary>64-bit words per reader line.</summary>
    public const int WordsPerLine = ReaderLineSize / sizeof(ulong);

    public const uint OwnerActiveBit = 0x8000_0000;

    /// <summary>The slot field of Owner (slot + 1, so 1..4096).</summary>
    public const uint OwnerSlotMask = 0x0000_1FFF;

    public const uint FlagTorn = 0x1;

    /// <summary>The block changed since the broker last wrote it back (durable containers; set by writers before
    /// they release, and with every torn mark; cleared by write-back under a read hold).</summary>
    public const uint FlagDirty = 0x2;

    public const int SeqSleepersBit = 0x1;
}

/// <summary>Direct view of a record's writer line; field offsets are pinned to <see cref="BlockLockDescriptor"/> by a
/// test. The reader lines follow it (<see cref="BlockLockDescriptor.ReadersOffset"/>).</summary>
[StructLayout(LayoutKind.Explicit, Size = BlockLockDescriptor.WriterLineSize)]
internal struct BlockLockRecord
{
    [FieldOffset(BlockLockDescriptor.OwnerOffset)]
    public uint Owner;

    [FieldOffset(BlockLockDescriptor.FlagsOffset)]
    public uint Flags;

    [FieldOffset(BlockLockDescriptor.WaitingOffset)]
    public ulong Waiting;

    [FieldOffset(BlockLockDescriptor.SeqOffset)]
    public int Seq;

    [FieldOffset(BlockLockDescriptor.ReaderLinesOffset)]
    public ulong ReaderLines;
}
