using System.Runtime.InteropServices;

namespace SharedStore.Regions;

/// <summary>
/// Layout of one block's cross-process reader/writer lock record, version 1 (<see cref="LockSegmentDescriptor.LayoutVersion"/>).
/// Every block of every object has one record; they sit back to back in the container segment's lock memfd.
/// <code>
///  0                   8                  16        ...         56                  64
///  +-------------------+-------------------+-------------------+-------------------+
///  | Readers[0]: slots 0-7, one byte each  | ...  Readers[7]: slots 56-63          |  line 0: reader counts
///  +---------+---------+-------------------+---------+---------+-------------------+
///  | Owner   | Flags   | Waiting (bit/slot)| Seq     | reserved ...                 |  line 1: writer side
///  +---------+---------+-------------------+---------+-------------------------------+
///  64        68        72                  80        84                          128
/// </code>
/// <list type="bullet">
/// <item><b>Readers</b>: byte <c>s &amp; 7</c> of word <c>s &gt;&gt; 3</c> counts the reads member slot <c>s</c> holds on
/// the block (1..255). Single writer per byte: the slot's own process (CAS on the word), or the broker's recovery once
/// that process is dead. The count is the attribution: no separate bookkeeping can disagree with it.</item>
/// <item><b>Owner</b>: 0 when free, else <c>(slot + 1) | ActiveBit</c>. Writers CAS 0 → slot+1 (pending: new readers
/// are held off while the present ones drain), set <see cref="OwnerActiveBit"/> once the readers are gone, and store
/// 0 to release. Recovery clears it for a dead slot.</item>
/// <item><b>Flags</b>: <see cref="FlagTorn"/>, set by recovery when an active owner died; cleared by a writer that
/// rewrote the whole block.</item>
/// <item><b>Waiting</b>: bit <c>s</c> set while slot <c>s</c> has at least one thread waiting to write (writer
/// priority: readers that do not already hold the block queue behind it). Set and cleared by the slot's process,
/// cleared by recovery.</item>
/// <item><b>Seq</b>: the futex word. Bit 0 means "someone may sleep on this record"; every wake adds 1 first.</item>
/// </list>
/// Bytes 88–103 of layout 2 hold the object versions: <see cref="ObjectVersionDescriptor"/>.
/// Publication rule: a read is held exactly while its slot's byte is non-zero and Owner is not active; a write is
/// held exactly while Owner carries the writer's slot with the active bit.
/// </summary>
internal static class BlockLockDescriptor
{
    public const int Size = 1 << 7; // 128: two cache lines, readers on one, writer state on the other
    public const int ReadersOffset = 0;
    public const int ReaderWords = 8;
    public const int OwnerOffset = 64;
    public const int FlagsOffset = 68;
    public const int WaitingOffset = 72;
    public const int SeqOffset = 80;

    /// <summary>Lock slots per record: 8 words × 8 one-byte counts.</summary>
    public const int MaxSlots = 64;

    /// <summary>The slot the broker's asynchronous appliers lock with (the last one); members get the others.</summary>
    public const int BrokerSlot = MaxSlots - 1;

    /// <summary>Member processes per container.</summary>
    public const int MaxMembers = MaxSlots - 1;

    /// <summary>Most reads one process may hold on one block at once (a one-byte count).</summary>
    public const int MaxHoldsPerSlot = byte.MaxValue;

    public const uint OwnerActiveBit = 0x8000_0000;
    public const uint OwnerSlotMask = 0x0000_00FF;

    public const uint FlagTorn = 0x1;

    /// <summary>The block changed since the broker last wrote it back (durable containers; set by writers before
    /// they release, and with every torn mark; cleared by write-back under a read hold).</summary>
    public const uint FlagDirty = 0x2;

    public const int SeqSleepersBit = 0x1;
}

/// <summary>Direct view of one record; field offsets are pinned to <see cref="BlockLockDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = BlockLockDescriptor.Size)]
internal unsafe struct BlockLockRecord
{
    [FieldOffset(BlockLockDescriptor.ReadersOffset)]
    public fixed ulong Readers[BlockLockDescriptor.ReaderWords];

    [FieldOffset(BlockLockDescriptor.OwnerOffset)]
    public uint Owner;

    [FieldOffset(BlockLockDescriptor.FlagsOffset)]
    public uint Flags;

    [FieldOffset(BlockLockDescriptor.WaitingOffset)]
    public ulong Waiting;

    [FieldOffset(BlockLockDescriptor.SeqOffset)]
    public int Seq;
}
