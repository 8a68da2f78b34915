using SharedStore.Broker;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>The liveness fields of a lock segment's header (docs/ARCHITECTURE.md §3.1): a client trusts a lock table
/// only when it names the broker instance it said hello to (pid and start timestamp); the heartbeat field is reserved
/// and never written (the socket is the broker's liveness signal).</summary>
[TestFixture]
public class SegmentLivenessTests
{
    private const long Start = 1_111_111;

    private static Segment NewSegment() =>
        new(1, 1, 1 << 16, 16, 4096, 1, dedicated: false, new BrokerIdentity(Environment.ProcessId, Start));

    private static SegmentInfo InfoOf(Segment seg) =>
        new() { SegmentId = seg.Id, DataLength = (ulong)seg.DataCapacity, LockLength = (ulong)seg.LockLength };

    [Test]
    public unsafe void NewSegment_HeartbeatField_IsReservedAndZero()
    {
        using var seg = NewSegment();
        var h = (LockSegmentHeader*)seg.LockMap.Pointer;
        Assert.That(h->BrokerStart, Is.EqualTo(Start));
        Assert.That(h->Heartbeat, Is.Zero, "nobody reads a heartbeat: the broker must not write one");
    }

    [Test]
    public void Map_LockTableOfAnotherBrokerInstanceWithTheSamePid_IsVersionMismatch()
    {
        using var seg = NewSegment();
        var e = Assert.Throws<SharedStoreException>(() => ClientSegment.Map(InfoOf(seg), seg.DataFd, seg.LockFd, Environment.ProcessId, Start + 1, 1));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.VersionMismatch));
        Assert.That(e.Message, Does.Contain("started at"));
    }

    [Test]
    public void Map_LockTableOfTheHelloBroker_Maps()
    {
        using var seg = NewSegment();
        using var mapped = ClientSegment.Map(InfoOf(seg), seg.DataFd, seg.LockFd, Environment.ProcessId, Start, 1);
        Assert.That(mapped.Locks.Length, Is.EqualTo(seg.LockLength));
    }

    [TestCase(2, 0, 0)]    // the reply says two reader lines, the header one
    [TestCase(1, 128, 0)]  // a member forged the header's slot count
    [TestCase(1, 0, 1152)] // ... or its record size
    public unsafe void Map_RecordShapeThatDisagreesWithTheReply_IsVersionMismatch(int lines, int forgedSlots, int forgedRecordSize)
    {
        // Contract: the record shape comes from the broker's reply and the header must agree; a header that a member
        // rewrote (the lock memfd is mapped read-write) is refused rather than used for offsets.
        using var seg = NewSegment();
        var h = (LockSegmentHeader*)seg.LockMap.Pointer;
        if (forgedSlots != 0)
        {
            h->Slots = forgedSlots;
        }

        if (forgedRecordSize != 0)
        {
            h->RecordSize = forgedRecordSize;
        }

        var e = Assert.Throws<SharedStoreException>(() => ClientSegment.Map(InfoOf(seg), seg.DataFd, seg.LockFd, Environment.ProcessId, Start, lines));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.VersionMismatch));
    }
}
