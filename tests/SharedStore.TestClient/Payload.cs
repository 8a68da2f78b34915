using System.Globalization;

namespace SharedStore.TestClient;

/// <summary>The deterministic payloads and checksums the test client and the tests both compute.</summary>
public static class Payload
{
    /// <summary>Fills <paramref name="dest"/> with the pattern of <paramref name="seed"/> starting at byte
    /// <paramref name="position"/> of the payload (so a payload may be built in pieces).</summary>
    public static void Fill(Span<byte> dest, long position, ulong seed)
    {
        for (int i = 0; i < dest.Length; i++)
        {
            ulong x = ((ulong)(position + i) * 0x9E3779B97F4A7C15UL) ^ seed;
            x ^= x >> 29;
            x *= 0xBF58476D1CE4E5B9UL;
            dest[i] = (byte)(x >> 56);
        }
    }

    /// <summary>FNV-1a (64-bit) over 8-byte little-endian words, then the tail bytes.</summary>
    public static unsafe ulong Checksum(byte* p, long length)
    {
        ulong h = 14695981039346656037UL;
        long words = length / 8;
        ulong* w = (ulong*)p;
        for (long i = 0; i < words; i++)
        {
            h = (h ^ w[i]) * 1099511628211UL;
        }

        for (long i = words * 8; i < length; i++)
        {
            h = (h ^ p[i]) * 1099511628211UL;
        }

        return h;
    }

    /// <summary><see cref="Checksum(byte*, long)"/> of a managed buffer.</summary>
    public static unsafe ulong Checksum(ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            return Checksum(p, data.Length);
        }
    }

    /// <summary>The checksum as the test client prints it.</summary>
    public static string Format(ulong checksum) => checksum.ToString("X16", CultureInfo.InvariantCulture);
}
