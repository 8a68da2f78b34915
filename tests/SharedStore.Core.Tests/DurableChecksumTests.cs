using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>The checksum of durable slots (docs/ARCHITECTURE.md §11): its value is part of the file format.</summary>
[TestFixture]
public unsafe class DurableChecksumTests
{
    [Test]
    public void Crc32C_CheckValue_IsTheCastagnoliOne()
    {
        // Contract: CRC-32C of the ASCII digits "123456789" is 0xE3069283 (the standard check value).
        byte[] digits = "123456789"u8.ToArray();
        fixed (byte* p = digits)
        {
            Assert.That(DurableFileDescriptor.Crc32C(p, digits.Length), Is.EqualTo(0xE306_9283u));
        }
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(31)]
    [TestCase(4095)]
    [TestCase(4096)]
    [TestCase(4097)]
    [TestCase(4096 + 31)]
    [TestCase(65_537)]
    [TestCase(1 << 20)]
    [TestCase((1 << 20) + 12_345)]
    public void Crc32C_AnyLength_MatchesBitwiseReference(int length)
    {
        // Contract: the four-lane computation (from 4 KiB) gives the value of a plain bit-by-bit CRC-32C, at every
        // length, including the tail that follows the lanes: files written before it stay readable.
        byte[] data = new byte[length + 3];
        new Random(length).NextBytes(data);
        fixed (byte* p = data)
        {
            byte* start = p + 3; // unaligned on purpose
            Assert.That(DurableFileDescriptor.Crc32C(start, length), Is.EqualTo(Reference(data.AsSpan(3, length))));
        }
    }

    private static uint Reference(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFF_FFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78u : crc >> 1;
            }
        }

        return ~crc;
    }
}
