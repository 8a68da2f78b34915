using SharedStore.Queues;

namespace SharedStore.Core.Tests;

/// <summary>Pins the asynchronous channel's layout (docs/ARCHITECTURE.md §9): header, status entries and the
/// submission message. A moved field fails here.</summary>
[TestFixture]
public unsafe class ChannelLayoutTests
{
    [Test]
    public void ChannelHeader_Layout_MatchesDescriptor()
    {
        // Contract: version 1 header; the broker-written completion line, the doorbell and the consumer state each
        // start a cache line of their own.
        var h = default(ChannelHeader);
        byte* b = (byte*)&h;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sizeof(ChannelHeader), Is.EqualTo(256));
            Assert.That((byte*)&h.Magic - b, Is.EqualTo(0));
            Assert.That((byte*)&h.Version - b, Is.EqualTo(8));
            Assert.That((byte*)&h.SlotCount - b, Is.EqualTo(12));
            Assert.That((byte*)&h.SlotSize - b, Is.EqualTo(16));
            Assert.That((byte*)&h.BrokerPid - b, Is.EqualTo(20));
            Assert.That((byte*)&h.StagingSize - b, Is.EqualTo(24));
            Assert.That((byte*)&h.RingOffset - b, Is.EqualTo(32));
            Assert.That((byte*)&h.StatusOffset - b, Is.EqualTo(40));
            Assert.That((byte*)&h.StagingOffset - b, Is.EqualTo(48));
            Assert.That((byte*)&h.CompletedThrough - b, Is.EqualTo(64));
            Assert.That((byte*)&h.CompletionWord - b, Is.EqualTo(72));
            Assert.That((byte*)&h.Doorbell - b, Is.EqualTo(128));
            Assert.That((byte*)&h.ConsumerState - b, Is.EqualTo(192));
            Assert.That(ChannelDescriptor.Magic, Is.EqualTo(BitConverter.ToUInt64("SSCHAN01"u8)));
            Assert.That(ChannelDescriptor.RingOffset, Is.EqualTo(4096));
        }
    }

    [Test]
    public void StatusEntryAndMessage_Layout_MatchesDescriptor()
    {
        // Contract: a status entry is {word u64, result i64}; a message header is 40 bytes, so a 64-byte write fits a
        // 128-byte slot inline with its 4-byte length.
        var e = default(OpStatusEntry);
        var m = default(ChannelMessage);
        byte* eb = (byte*)&e;
        byte* mb = (byte*)&m;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sizeof(OpStatusEntry), Is.EqualTo(ChannelDescriptor.StatusEntrySize).And.EqualTo(16));
            Assert.That((byte*)&e.Result - eb, Is.EqualTo(8));
            Assert.That(sizeof(ChannelMessage), Is.EqualTo(ChannelMessage.HeaderSize).And.EqualTo(40));
            Assert.That(&m.Kind - mb, Is.EqualTo(0));
            Assert.That(&m.Flags - mb, Is.EqualTo(1));
            Assert.That((byte*)&m.ContainerId - mb, Is.EqualTo(4));
            Assert.That((byte*)&m.ObjectId - mb, Is.EqualTo(8));
            Assert.That((byte*)&m.Length - mb, Is.EqualTo(12));
            Assert.That((byte*)&m.Offset - mb, Is.EqualTo(16));
            Assert.That((byte*)&m.StagingOffset - mb, Is.EqualTo(24));
            Assert.That((byte*)&m.TotalLength - mb, Is.EqualTo(32));
            Assert.That(ChannelDescriptor.DefaultSlotSize - RingDescriptor.SlotHeaderSize - ChannelMessage.HeaderSize, Is.GreaterThanOrEqualTo(64));
        }
    }

    [Test]
    public void Regions_DoNotOverlap_AndStagingIsHugePageAligned()
    {
        // Contract: ring, status table and staging follow each other without overlap for any supported size.
        foreach (int slots in new[] { 64, 1024, 16 * 1024, 1 << 20 })
        {
            long ringEnd = ChannelDescriptor.RingOffset + RingDescriptor.LengthFor(slots, ChannelDescriptor.DefaultSlotSize);
            long status = ChannelDescriptor.StatusOffsetFor(slots, ChannelDescriptor.DefaultSlotSize);
            long staging = ChannelDescriptor.StagingOffsetFor(slots, ChannelDescriptor.DefaultSlotSize);
            Assert.That(status, Is.GreaterThanOrEqualTo(ringEnd));
            Assert.That(staging, Is.GreaterThanOrEqualTo(status + ((long)slots * ChannelDescriptor.StatusEntrySize)));
            Assert.That(staging % (1 << 21), Is.Zero);
            Assert.That(ChannelDescriptor.LengthFor(slots, ChannelDescriptor.DefaultSlotSize, 1 << 20), Is.EqualTo(staging + (1 << 20)));
        }
    }

    [Test]
    public void StatusWord_PendingAndTerminal_AreTellApart()
    {
        // Contract: a word naming an older position (or the zero word) means "pending" for the newer op; a word for
        // the op itself is its state; the position survives the packing.
        Assert.That(OpStatusEntry.IsPendingFor(0, 0), Is.True);
        Assert.That(OpStatusEntry.IsPendingFor(OpStatusEntry.Make(0, OpState.Applying), 0), Is.False);
        Assert.That(OpStatusEntry.IsPendingFor(OpStatusEntry.Make(5, OpState.Done), 5 + 64), Is.True);
        ulong w = OpStatusEntry.Make(123_456_789_012, OpState.Canceled);
        Assert.That(OpStatusEntry.PositionOf(w), Is.EqualTo(123_456_789_012));
        Assert.That(OpStatusEntry.StateOf(w), Is.EqualTo(OpState.Canceled));
    }
}
