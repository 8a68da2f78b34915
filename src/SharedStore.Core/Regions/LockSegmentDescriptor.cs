using System.Runtime.InteropServices;

namespace SharedStore.Regions;

/// <summary>
/// Layout of a segment's lock memfd, version 3. The first 4 KiB page is the header; block lock records
/// (<see cref="BlockLockDescriptor"/>) follow from <see cref="RecordsOffset"/>.
/// <code>
///  0        8        12       16       20       24               32               40               48
///  +--------+--------+--------+--------+--------+----------------+----------------+----------------+
///  | Magic  | Version| SegId  | ContId | BrkPid | BrokerStart    | Heartbeat      | RecordCapacity |
///  +--------+--------+--------+--------+--------+----------------+----------------+----------------+
///  48       56       60       64                                                             4096
///  | BlockSz| Slots  | RecSz  | reserved ...                                                      |
///  +--------+--------+--------+---------------------------------------------------------------------+
/// </code>
/// The broker writes every header field before it hands the descriptor to anyone, and none afterwards: a client
/// trusts a region whose Magic and Version match and whose BrokerPid and BrokerStart equal what the broker said in its
/// hello (<c>ClientSegment.Map</c>; the start timestamp tells a later broker that got the same pid apart). Heartbeat is
/// reserved and stays 0: the broker's liveness is its socket (docs/ARCHITECTURE.md §5), which a client notices at once.
/// </summary>
internal static class LockSegmentDescriptor
{
    public const ulong Magic = 0x3130_4B43_4F4C_5353; // "SSLOCK01" little-endian
    /// <summary>3: records of any number of reader lines (up to 4 096 slots, issue 16), writer line first; 2: the
    /// records carry the object versions (<see cref="ObjectVersionDescriptor"/>, issue 17); 1: 64 slots.</summary>
    public const uint LayoutVersion = 3;

    public const int MagicOffset = 0;
    public const int VersionOffset = 8;
    public const int SegmentIdOffset = 12;
    public const int ContainerIdOffset = 16;
    public const int BrokerPidOffset = 20;
    public const int BrokerStartOffset = 24;
    public const int HeartbeatOffset = 32;
    public const int RecordCapacityOffset = 40;
    public const int BlockSizeOffset = 48;
    /// <summary>Lock slots per record: 64 × the reader lines (members and the broker's slot, the last).</summary>
    public const int SlotsOffset = 56;

    /// <summary>Bytes per record (<see cref="BlockLockDescriptor.RecordSize"/> of the reader lines).</summary>
    public const int RecordSizeOffset = 60;
    public const int HeaderSize = 1 << 12; // 4096: one page, so records start page-aligned
    public const int RecordsOffset = HeaderSize;

    /// <summary>Bytes of a lock memfd holding <paramref name="records"/> records of <paramref name="recordSize"/>
    /// bytes, rounded up to whole pages.</summary>
    public static long LengthFor(long records, int recordSize) =>
        RoundUpToPage(RecordsOffset + (records * recordSize));

    public static long RoundUpToPage(long n) => (n + 4095) & ~4095L;
}

/// <summary>Direct view of the lock segment header; offsets pinned to <see cref="LockSegmentDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct LockSegmentHeader
{
    [FieldOffset(LockSegmentDescriptor.MagicOffset)] public ulong Magic;
    [FieldOffset(LockSegmentDescriptor.VersionOffset)] public uint Version;
    [FieldOffset(LockSegmentDescriptor.SegmentIdOffset)] public uint SegmentId;
    [FieldOffset(LockSegmentDescriptor.ContainerIdOffset)] public uint ContainerId;
    [FieldOffset(LockSegmentDescriptor.BrokerPidOffset)] public int BrokerPid;
    [FieldOffset(LockSegmentDescriptor.BrokerStartOffset)] public long BrokerStart;
    [FieldOffset(LockSegmentDescriptor.HeartbeatOffset)] public long Heartbeat; // reserved, 0: never written
    [FieldOffset(LockSegmentDescriptor.RecordCapacityOffset)] public long RecordCapacity;
    [FieldOffset(LockSegmentDescriptor.BlockSizeOffset)] public long BlockSize;
    [FieldOffset(LockSegmentDescriptor.SlotsOffset)] public int Slots;
    [FieldOffset(LockSegmentDescriptor.RecordSizeOffset)] public int RecordSize;
}
