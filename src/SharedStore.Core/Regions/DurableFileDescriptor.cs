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
    /// <remarks>The crc32 instruction takes 3 cycles and a new one can start every cycle, so one chain over the data
    /// runs at a third of what the core can do (about 8 GB/s here). From 4 KiB up the data is cut into four equal
    /// lanes that run as four independent chains, joined with <see cref="Shift"/>: the same value, 2-2.5x faster
    /// (1 GiB written back spent 120-140 ms in CRC with one chain, 45-65 ms with four; durable-writeback in
    /// tools/SharedStore.Bench/README.md).</remarks>
    public static unsafe uint Crc32C(byte* data, long length)
    {
        long lane = length / 32 * 8; // a multiple of 8 bytes; the rest (< 32 bytes) follows the last lane
        if (lane < 1 << 10)
        {
            return ~Crc32CUpdate(0xFFFF_FFFF, data, length);
        }

        uint c0 = 0xFFFF_FFFF, c1 = 0, c2 = 0, c3 = 0;
        byte* p1 = data + lane, p2 = p1 + lane, p3 = p2 + lane;
        for (long i = 0; i < lane; i += 8)
        {
            c0 = BitOperations.Crc32C(c0, *(ulong*)(data + i));
            c1 = BitOperations.Crc32C(c1, *(ulong*)(p1 + i));
            c2 = BitOperations.Crc32C(c2, *(ulong*)(p2 + i));
            c3 = BitOperations.Crc32C(c3, *(ulong*)(p3 + i));
        }

        // The register after lane k+1 is the register after lane k run over `lane` more bytes (a multiplication by
        // x^(8·lane) modulo the polynomial) xor lane k+1's own register from zero: CRC is linear.
        uint shift = XPow8N(lane);
        uint c = Shift(c0, shift) ^ c1;
        c = Shift(c, shift) ^ c2;
        c = Shift(c, shift) ^ c3;
        return ~Crc32CUpdate(c, p3 + lane, length - (4 * lane));
    }

    private static unsafe uint Crc32CUpdate(uint crc, byte* data, long length)
    {
        long i = 0;
        for (; i + 8 <= length; i += 8)
        {
            crc = BitOperations.Crc32C(crc, *(ulong*)(data + i));
        }

        for (; i < length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }

        return crc;
    }

    /// <summary>a·b modulo the CRC-32C polynomial, both in the reflected bit order of the crc32 instruction.</summary>
    private static uint Shift(uint a, uint b)
    {
        const uint Polynomial = 0x82F6_3B78; // reflected 0x1EDC6F41
        uint product = 0;
        for (int k = 0; k < 32; k++)
        {
            if ((a & 0x8000_0000u) != 0)
            {
                product ^= b;
            }

            a <<= 1;
            b = (b & 1) != 0 ? (b >> 1) ^ Polynomial : b >> 1;
        }

        return product;
    }

    /// <summary>x^(8·n) modulo the polynomial (reflected), by squaring: the factor that moves a register n bytes on.</summary>
    private static uint XPow8N(long n)
    {
        uint result = 0x8000_0000u; // x^0
        uint square = 0x0080_0000u; // x^8
        while (n != 0)
        {
            if ((n & 1) != 0)
            {
                result = Shift(result, square);
            }

            square = Shift(square, square);
            n >>= 1;
        }

        return result;
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
