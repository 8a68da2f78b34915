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
        new(1, 1, 1 << 16, 16, 4096, dedicated: false, new BrokerIdentity(Environment.ProcessId, Start));

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
        var e = Assert.Throws<SharedStoreException>(() => ClientSegment.Map(InfoOf(seg), seg.DataFd, seg.LockFd, Environment.ProcessId, Start + 1));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.VersionMismatch));
        Assert.That(e.Message, Does.Contain("started at"));
    }

    [Test]
    public void Map_LockTableOfTheHelloBroker_Maps()
    {
        using var seg = NewSegment();
        using var mapped = ClientSegment.Map(InfoOf(seg), seg.DataFd, seg.LockFd, Environment.ProcessId, Start);
        Assert.That(mapped.Locks.Length, Is.EqualTo(seg.LockLength));
    }
}
