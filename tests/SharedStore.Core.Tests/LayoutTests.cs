using System.Runtime.CompilerServices;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Pins the shared-memory layouts (docs/ARCHITECTURE.md §Layouts): a moved field fails here, not in the field.</summary>
[TestFixture]
public unsafe class LayoutTests
{
    [Test]
    public void BlockLockRecord_Layout_MatchesDescriptor()
    {
        // Contract: one record is two cache lines: reader bytes on the first, writer state on the second.
        Assert.That(sizeof(BlockLockRecord), Is.EqualTo(BlockLockDescriptor.Size).And.EqualTo(128));
        var r = default(BlockLockRecord);
        byte* b = (byte*)&r;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((byte*)&r.Readers[0] - b, Is.EqualTo(BlockLockDescriptor.ReadersOffset).And.EqualTo(0));
            Assert.That((byte*)&r.Owner - b, Is.EqualTo(BlockLockDescriptor.OwnerOffset).And.EqualTo(64));
            Assert.That((byte*)&r.Flags - b, Is.EqualTo(BlockLockDescriptor.FlagsOffset).And.EqualTo(68));
            Assert.That((byte*)&r.Waiting - b, Is.EqualTo(BlockLockDescriptor.WaitingOffset).And.EqualTo(72));
            Assert.That((byte*)&r.Seq - b, Is.EqualTo(BlockLockDescriptor.SeqOffset).And.EqualTo(80));
            Assert.That(BlockLockDescriptor.ReaderWords * 8, Is.EqualTo(BlockLockDescriptor.MaxSlots), "one byte per slot");
            Assert.That(BlockLockDescriptor.WaitingOffset % 8, Is.Zero, "Waiting is a 64-bit atomic: 8-aligned");
        }
    }

    [Test]
    public void ObjectVersion_Layout_LivesInTheReservedBytesOfTheWriterLine()
    {
        // Contract: the block version (every record) and the object's version word (record 0) sit in bytes 88-103,
        // after Seq and inside the record's second cache line, 8-aligned for 64-bit atomics; the futex is the word's
        // low half (little-endian), so a version change changes the futex value.
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ObjectVersionDescriptor.LayoutVersion, Is.EqualTo(1u));
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset, Is.EqualTo(88));
            Assert.That(ObjectVersionDescriptor.VersionWordOffset, Is.EqualTo(96));
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset, Is.GreaterThanOrEqualTo(BlockLockDescriptor.SeqOffset + sizeof(int)));
            Assert.That(ObjectVersionDescriptor.VersionWordOffset + sizeof(long), Is.LessThanOrEqualTo(BlockLockDescriptor.Size));
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset / 64, Is.EqualTo(1), "writer-side cache line");
            Assert.That(ObjectVersionDescriptor.VersionWordOffset / 64, Is.EqualTo(1), "writer-side cache line");
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset % 8, Is.Zero);
            Assert.That(ObjectVersionDescriptor.VersionWordOffset % 8, Is.Zero);
            Assert.That(ObjectVersionDescriptor.VersionIncrement, Is.EqualTo(ObjectVersionDescriptor.SleepersBit << 1));
            Assert.That(BitConverter.IsLittleEndian, Is.True, "the futex word is the low half");
        }
    }

    [Test]
    public void LockSegmentHeader_Layout_MatchesDescriptor()
    {
        // Contract: version 1 header fields at fixed offsets; records start on the second page.
        var h = default(LockSegmentHeader);
        byte* b = (byte*)&h;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((byte*)&h.Magic - b, Is.EqualTo(0));
            Assert.That((byte*)&h.Version - b, Is.EqualTo(8));
            Assert.That((byte*)&h.SegmentId - b, Is.EqualTo(12));
            Assert.That((byte*)&h.ContainerId - b, Is.EqualTo(16));
            Assert.That((byte*)&h.BrokerPid - b, Is.EqualTo(20));
            Assert.That((byte*)&h.BrokerStart - b, Is.EqualTo(24));
            Assert.That((byte*)&h.Heartbeat - b, Is.EqualTo(32));
            Assert.That((byte*)&h.RecordCapacity - b, Is.EqualTo(40));
            Assert.That((byte*)&h.BlockSize - b, Is.EqualTo(48));
            Assert.That((byte*)&h.Slots - b, Is.EqualTo(56));
            Assert.That(LockSegmentDescriptor.RecordsOffset, Is.EqualTo(4096));
            Assert.That(LockSegmentDescriptor.Magic, Is.EqualTo(BitConverter.ToUInt64("SSLOCK01"u8)));
            Assert.That(LockSegmentDescriptor.LayoutVersion, Is.EqualTo(2u), "2: records carry object versions");
        }
    }

    [Test]
    public void LockSegmentLength_RoundsToPages()
    {
        Assert.That(LockSegmentDescriptor.LengthFor(1), Is.EqualTo(8192));
        Assert.That(LockSegmentDescriptor.LengthFor(32), Is.EqualTo(8192));
        Assert.That(LockSegmentDescriptor.LengthFor(33), Is.EqualTo(12288));
    }
}
