using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Pins the durable object file layout (docs/ARCHITECTURE.md §11) and its checksum.</summary>
[TestFixture]
public unsafe class DurableLayoutTests
{
    [Test]
    public void FileAndSlotHeaders_Layout_MatchesDescriptor()
    {
        // Contract: version 1 headers at fixed offsets; slots interleave per block (b0s0, b0s1, b1s0, ...), each a
        // 4 KiB header page then the block's data, after a 4 KiB file header.
        var f = default(DurableFileHeader);
        var s = default(DurableSlotHeader);
        byte* fb = (byte*)&f;
        byte* sb = (byte*)&s;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((byte*)&f.Version - fb, Is.EqualTo(8));
            Assert.That((byte*)&f.BlockSize - fb, Is.EqualTo(12));
            Assert.That((byte*)&f.ObjectSize - fb, Is.EqualTo(16));
            Assert.That((byte*)&f.BlockCount - fb, Is.EqualTo(24));
            Assert.That(DurableFileDescriptor.Magic, Is.EqualTo(BitConverter.ToUInt64("SSDURA01"u8)));
            Assert.That((byte*)&s.Version - sb, Is.EqualTo(4));
            Assert.That((byte*)&s.Flags - sb, Is.EqualTo(6));
            Assert.That((byte*)&s.Block - sb, Is.EqualTo(8));
            Assert.That((byte*)&s.Generation - sb, Is.EqualTo(16));
            Assert.That((byte*)&s.Length - sb, Is.EqualTo(24));
            Assert.That((byte*)&s.DataCrc - sb, Is.EqualTo(28));
            Assert.That((byte*)&s.HeaderCrc - sb, Is.EqualTo(DurableFileDescriptor.SlotHeaderCrcLength).And.EqualTo(36));
            Assert.That(DurableFileDescriptor.SlotMagic, Is.EqualTo(BitConverter.ToUInt32("SSBK"u8)));
            Assert.That(DurableFileDescriptor.SlotOffset(0, 0, 65536), Is.EqualTo(4096));
            Assert.That(DurableFileDescriptor.SlotOffset(0, 1, 65536), Is.EqualTo(4096 + 4096 + 65536));
            Assert.That(DurableFileDescriptor.SlotOffset(1, 0, 65536), Is.EqualTo(4096 + (2 * (4096 + 65536))));
            Assert.That(DurableFileDescriptor.FileLength(3, 65536), Is.EqualTo(4096 + (6L * (4096 + 65536))));
        }
    }

    [Test]
    public void Crc32C_MatchesTheStandardCheckValue_AndSealedHeadersVerify()
    {
        // Contract: the checksum is CRC-32C (check value of "123456789" is 0xE3069283); a sealed header is intact for
        // its block, and any flipped bit or another block number makes it not intact.
        byte[] check = "123456789"u8.ToArray();
        fixed (byte* p = check)
        {
            Assert.That(DurableFileDescriptor.Crc32C(p, check.Length), Is.EqualTo(0xE3069283u));
        }

        var h = new DurableSlotHeader { Magic = DurableFileDescriptor.SlotMagic, Version = DurableFileDescriptor.SlotVersion, Block = 7, Generation = 3, Length = 4096, DataCrc = 0x1234 };
        DurableSlotHeader.Seal(&h);
        Assert.That(DurableSlotHeader.IsIntact(&h, 7), Is.True);
        Assert.That(DurableSlotHeader.IsIntact(&h, 8), Is.False);
        h.Generation ^= 1;
        Assert.That(DurableSlotHeader.IsIntact(&h, 7), Is.False);
        var empty = default(DurableSlotHeader);
        Assert.That(DurableSlotHeader.IsEmpty(&empty), Is.True);
    }
}
