using System.Numerics;
using System.Runtime.InteropServices;

namespace SharedStore.Regions;

/// <summary>
/// Layout of a durable object's file, version 1 (docs/ARCHITECTURE.md §11). Every block has two <b>shadow slots</b>;
/// write-back writes a block into the slot that does not hold its newest valid copy, so the newest copy on disk is
/// never overwritten in place and a write torn by a crash damages only the slot being written.
/// <code>
///  0: file header (4096): Magic "SSDURA01" u64 | Version u32 | BlockSize u32 | ObjectSize u64 | BlockCount u64
///  4096 + (2·b + s)·(4096 + BlockSize): slot s ∈ {0, 1} of block b =
///       slot header (4096): Magic u32 "SSBK" | Version u16 | Flags u16 | Block u64 | Generation u64 | Length u32 |
///                           DataCrc u32 (CRC-32C of the Length data bytes) | HeaderCrc u32 (of bytes 0..36)
///       data (BlockSize; the last block uses Length &lt; BlockSize)
/// </code>
/// A slot is valid when its magic, version, block number and both checksums match. Restore takes, per block, the
/// valid slot with the highest generation; a block with no valid slot (but a written one) is reported corrupt and
/// marked torn, never served silently. Slots never written read as zeros and are "empty", not corrupt.
/// </summary>
internal static class DurableFileDescriptor
{
    public const ulong Magic = 0x3130_4152_5544_5353; // "SSDURA01" little-endian
    public const uint LayoutVersion = 1;
    public const int HeaderSize = 4096;
    public const int SlotHeaderSize = 4096;
    public const uint SlotMagic = 0x4B42_5353; // "SSBK"
    public const ushort SlotVersion = 1;
    public const ushort SlotFlagTorn = 1;      // the block was marked torn in memory when it was written back
    public const int SlotHeaderCrcLength = 36;  // the header checksum covers bytes [0, 36)

    public static long SlotStride(int blockSize) => SlotHeaderSize + (long)blockSize;

    public static long SlotOffset(long block, int slot, int blockSize) => HeaderSize + (((2 * block) + slot) * SlotStride(blockSize));

    public static long FileLength(long blockCount, int blockSize) => HeaderSize + (2 * blockCount * SlotStride(blockSize));

    /// <summary>CRC-32C (Castagnoli), hardware-accelerated through <see cref="BitOperations.Crc32C(uint, ulong)"/>.</summary>
    public static unsafe uint Crc32C(byte* data, long length)
    {
        uint crc = 0xFFFF_FFFF;
        long i = 0;
        for (; i + 8 <= length; i += 8)
        {
            crc = BitOperations.Crc32C(crc, *(ulong*)(data + i));
        }

        for (; i < length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }

        return ~crc;
    }
}

/// <summary>The file header; offsets pinned to <see cref="DurableFileDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct DurableFileHeader
{
    [FieldOffset(0)] public ulong Magic;
    [FieldOffset(8)] public uint Version;
    [FieldOffset(12)] public int BlockSize;
    [FieldOffset(16)] public long ObjectSize;
    [FieldOffset(24)] public long BlockCount;
}

/// <summary>A slot header; offsets pinned to <see cref="DurableFileDescriptor"/> by a test.</summary>
[StructLayout(LayoutKind.Explicit, Size = 40)]
internal struct DurableSlotHeader
{
    [FieldOffset(0)] public uint Magic;
    [FieldOffset(4)] public ushort Version;
    [FieldOffset(6)] public ushort Flags;
    [FieldOffset(8)] public long Block;
    [FieldOffset(16)] public long Generation;
    [FieldOffset(24)] public int Length;
    [FieldOffset(28)] public uint DataCrc;
    [FieldOffset(32)] public uint Reserved;
    [FieldOffset(36)] public uint HeaderCrc;

    /// <summary>Seals the header: computes HeaderCrc over bytes [0, 36).</summary>
    public static unsafe void Seal(DurableSlotHeader* h) =>
        h->HeaderCrc = DurableFileDescriptor.Crc32C((byte*)h, DurableFileDescriptor.SlotHeaderCrcLength);

    /// <summary>Whether the header is intact and names <paramref name="block"/> (data not checked).</summary>
    public static unsafe bool IsIntact(DurableSlotHeader* h, long block) =>
        h->Magic == DurableFileDescriptor.SlotMagic && h->Version == DurableFileDescriptor.SlotVersion && h->Block == block
        && h->HeaderCrc == DurableFileDescriptor.Crc32C((byte*)h, DurableFileDescriptor.SlotHeaderCrcLength);

    /// <summary>Whether the slot was never written (all zero).</summary>
    public static unsafe bool IsEmpty(DurableSlotHeader* h) => h->Magic == 0 && h->Generation == 0 && h->HeaderCrc == 0;
}
