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
        // Contract (layout 3): the writer line is the record's first cache line; reader lines of 64 one-byte slots
        // follow it back to back; 1 to 64 lines, so records of 128 bytes (63 members) up to 4 160 bytes (4 095).
        Assert.That(sizeof(BlockLockRecord), Is.EqualTo(BlockLockDescriptor.WriterLineSize).And.EqualTo(64));
        var r = default(BlockLockRecord);
        byte* b = (byte*)&r;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((byte*)&r.Owner - b, Is.EqualTo(BlockLockDescriptor.OwnerOffset).And.EqualTo(0));
            Assert.That((byte*)&r.Flags - b, Is.EqualTo(BlockLockDescriptor.FlagsOffset).And.EqualTo(4));
            Assert.That((byte*)&r.Waiting - b, Is.EqualTo(BlockLockDescriptor.WaitingOffset).And.EqualTo(8));
            Assert.That((byte*)&r.Seq - b, Is.EqualTo(BlockLockDescriptor.SeqOffset).And.EqualTo(16));
            Assert.That((byte*)&r.ReaderLines - b, Is.EqualTo(BlockLockDescriptor.ReaderLinesOffset).And.EqualTo(24));
            Assert.That(BlockLockDescriptor.ReadersOffset, Is.EqualTo(64));
            Assert.That(BlockLockDescriptor.WaitingOffset % 8, Is.Zero, "Waiting is a 64-bit atomic: 8-aligned");
            Assert.That(BlockLockDescriptor.ReaderLinesOffset % 8, Is.Zero, "ReaderLines is a 64-bit atomic: 8-aligned");
            Assert.That(BlockLockDescriptor.SlotsPerLine, Is.EqualTo(64));
            Assert.That(BlockLockDescriptor.MaxLines, Is.EqualTo(64), "one bit per line in ReaderLines and Waiting");
            Assert.That(BlockLockDescriptor.RecordSize(1), Is.EqualTo(128));
            Assert.That(BlockLockDescriptor.RecordSize(17), Is.EqualTo(1152));
            Assert.That(BlockLockDescriptor.LinesFor(63), Is.EqualTo(1), "63 members and the broker: one line");
            Assert.That(BlockLockDescriptor.LinesFor(64), Is.EqualTo(2));
            Assert.That(BlockLockDescriptor.LinesFor(1024), Is.EqualTo(17));
            Assert.That(BlockLockDescriptor.LinesFor(BlockLockDescriptor.MaxMembersLimit), Is.EqualTo(64));
            Assert.That(BlockLockDescriptor.BrokerSlot(1), Is.EqualTo(63), "the broker's slot is the last");
            Assert.That(BlockLockDescriptor.DefaultMaxMembers, Is.EqualTo(63));
            Assert.That(BlockLockDescriptor.MaxHoldsPerSlot | BlockLockDescriptor.SlotWaitFlag, Is.EqualTo(0xFF), "count in bits 0-6, flag bit 7");
            Assert.That(BlockLockDescriptor.CountsMask | BlockLockDescriptor.WaitFlagsMask, Is.EqualTo(ulong.MaxValue));
            Assert.That(BlockLockDescriptor.OwnerSlotMask, Is.GreaterThanOrEqualTo((uint)BlockLockDescriptor.MaxSlots), "Owner holds slot + 1 up to 4 096");
        }
    }

    [Test]
    public void ObjectVersion_Layout_LivesInTheWriterLine()
    {
        // Contract: the block version (every record) and the object's version word (record 0) sit in bytes 32-47,
        // after ReaderLines and inside the writer line, 8-aligned for 64-bit atomics; the futex is the word's low half
        // (little-endian), so a version change changes the futex value.
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ObjectVersionDescriptor.LayoutVersion, Is.EqualTo(1u));
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset, Is.EqualTo(32));
            Assert.That(ObjectVersionDescriptor.VersionWordOffset, Is.EqualTo(40));
            Assert.That(ObjectVersionDescriptor.BlockVersionOffset, Is.GreaterThanOrEqualTo(BlockLockDescriptor.ReaderLinesOffset + sizeof(ulong)));
            Assert.That(ObjectVersionDescriptor.VersionWordOffset + sizeof(long), Is.LessThanOrEqualTo(BlockLockDescriptor.WriterLineSize), "writer line");
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
            Assert.That((byte*)&h.RecordSize - b, Is.EqualTo(60));
            Assert.That(LockSegmentDescriptor.RecordsOffset, Is.EqualTo(4096));
            Assert.That(LockSegmentDescriptor.Magic, Is.EqualTo(BitConverter.ToUInt64("SSLOCK01"u8)));
            Assert.That(LockSegmentDescriptor.LayoutVersion, Is.EqualTo(3u), "3: records of 1-64 reader lines");
        }
    }

    [Test]
    public void LockSegmentLength_RoundsToPages()
    {
        Assert.That(LockSegmentDescriptor.LengthFor(1, 128), Is.EqualTo(8192));
        Assert.That(LockSegmentDescriptor.LengthFor(32, 128), Is.EqualTo(8192));
        Assert.That(LockSegmentDescriptor.LengthFor(33, 128), Is.EqualTo(12288));
        Assert.That(LockSegmentDescriptor.LengthFor(4, 1152), Is.EqualTo(12288));
    }
}
