using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace SharedStore.TortureWorker;

/// <summary>Self-checking block content: [writer:u32][seq:u32] pseudo-random bytes … [checksum:u64]. A block is
/// either never written (all zero) or carries a valid checksum — unless a writer died mid-copy (then the block must be
/// marked torn).</summary>
public static class BlockPattern
{
    public static void Fill(Span<byte> block, uint writer, uint seq)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(block, writer);
        BinaryPrimitives.WriteUInt32LittleEndian(block[4..], seq);
        ulong x = ((ulong)writer << 32) | seq | 1;
        var words = MemoryMarshal.Cast<byte, ulong>(block[8..^8]);
        for (int i = 0; i < words.Length; i++)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words[i] = x;
        }

        BinaryPrimitives.WriteUInt64LittleEndian(block[^8..], Checksum(block[..^8]));
    }

    public static bool IsValid(ReadOnlySpan<byte> block) =>
        block.IndexOfAnyExcept((byte)0) < 0 || BinaryPrimitives.ReadUInt64LittleEndian(block[^8..]) == Checksum(block[..^8]);

    public static ulong Checksum(ReadOnlySpan<byte> data)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        ulong h = 0x9E3779B97F4A7C15;
        foreach (ulong w in words)
        {
            h = (h ^ w) * 0xBF58476D1CE4E5B9;
            h ^= h >> 29;
        }

        return h;
    }
}
