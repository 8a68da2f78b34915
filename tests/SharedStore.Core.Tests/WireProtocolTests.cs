using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.Core.Tests;

/// <summary>The wire schema is compiled by Grpc.Tools' protoc 35.1 against the Google.Protobuf 3.25.1 runtime (the
/// newest each the registry serves); these tests pin that the pair works for every message we send.</summary>
[TestFixture]
public class WireProtocolTests
{
    [Test]
    public void EveryRequestBody_RoundTrips()
    {
        var bodies = new Request[]
        {
            new() { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion, ClientName = "t" } },
            new() { ContainerCreate = new ContainerCreate { Name = "c", GroupId = 1000, WritePolicy = Protocol.WritePolicy.CreatorOnly, BlockSize = 4096, DurablePath = "/var/lib/x" } },
            new() { ContainerCreate = new ContainerCreate { Name = "r", Replication = new Replication { NatsUrl = "nats://a:4222,nats://b:4222", Stream = "S", Bucket = "B", StreamReplicas = 3, Replica = true } } },
            new() { ContainerCreate = new ContainerCreate { Name = "t", Replication = new Replication { TakeOver = true } } },
            new() { ContainerJoin = new ContainerJoin { Name = "c" } },
            new() { ContainerLeave = new ContainerLeave { ContainerId = 3 } },
            new() { ContainerDestroy = new ContainerDestroy { ContainerId = 3 } },
            new() { ObjectCreate = new ObjectCreate { ContainerId = 3, Name = "o", Size = 1UL << 33 } },
            new() { ObjectJoin = new ObjectJoin { ContainerId = 3, Name = "o" } },
            new() { ObjectLeave = new ObjectLeave { ContainerId = 3, ObjectId = 4 } },
            new() { ObjectDestroy = new ObjectDestroy { ContainerId = 3, ObjectId = 4 } },
            new() { Cancel = new Cancel { RequestId = 9 } },
            new() { List = new ListRequest() },
            new() { Holders = new HoldersRequest { ContainerName = "c", ObjectName = "o" } },
            new() { Status = new StatusRequest() },
            new() { AsyncOpen = new AsyncOpen { SlotCount = 1024, StagingBytes = 1UL << 23 } },
            new() { Flush = new Flush { ContainerId = 3 } },
            new() { SegmentFetch = new SegmentFetch { ContainerId = 3, SegmentId = 2 } },
            new() { LockCheck = new LockCheck { ContainerId = 3, ObjectId = 4, Block = 1UL << 40 } },
            new() { SegmentFetch = new SegmentFetch { ContainerId = 3, SegmentId = 5 } },
            new() { NameWait = new NameWait { ContainerId = 3, Name = "o" } },
        };
        Assert.That(bodies.Select(b => b.BodyCase).Distinct().Count(), Is.EqualTo(Enum.GetValues<Request.BodyOneofCase>().Length - 1), "every body kind is covered");
        foreach (var b in bodies)
        {
            b.Id = 77;
            b.TimeoutMs = 1234;
            var back = Request.Parser.ParseFrom(b.ToByteArray());
            Assert.That(back, Is.EqualTo(b));
        }
    }

    [Test]
    public void ResponseWithSegmentsAndList_RoundTrips()
    {
        var r = new Response
        {
            Id = 5,
            Error = Protocol.ErrorCode.NoResources,
            Message = "m",
            Object = new ObjectInfo { ObjectId = 1, Name = "o", Size = 3UL << 31, SegmentId = 2, DataOffset = 4096, LockOffset = 4096, BlockCount = 3 },
        };
        r.Segments.Add(new SegmentInfo { SegmentId = 2, DataLength = 1 << 26, LockLength = 8 << 20, ReadOnly = true });
        Assert.That(Response.Parser.ParseFrom(r.ToByteArray()), Is.EqualTo(r));
        var list = new Response { List = new ListReply() };
        list.List.Containers.Add(new ContainerEntry { Info = new ContainerInfo { ContainerId = 1, Name = "c" }, Bytes = 10 });
        Assert.That(Response.Parser.ParseFrom(list.ToByteArray()), Is.EqualTo(list));
    }

    [Test]
    public void LockCheckReply_RoundTrips()
    {
        // Contract: the repair report keeps every slot (up to 4 095), the cleared Owner word and the line bits.
        var check = new LockCheckReply { Owner = 0x8000_0040, WaitingLines = 1UL << 63 | 1 };
        check.ReaderSlots.AddRange([0, 63, 1087, 4095]);
        check.WaitingSlots.Add(40);
        var r = new Response { LockCheck = check };
        Assert.That(Response.Parser.ParseFrom(r.ToByteArray()), Is.EqualTo(r));
    }

    [Test]
    public void HoldersAndStatusReplies_RoundTrip()
    {
        // Contract: the operator replies (sharedstore holders / stats) survive the protoc/runtime pair like the rest.
        var holders = new Response { Holders = new HoldersReply { BlockSize = 1 << 20, BlockCount = 3 } };
        var block = new BlockHolders { Block = 1, Torn = true, Writer = new LockHolder { Slot = 2, Pid = 42, ProcessName = "w", Count = 1, Active = false } };
        block.Readers.Add(new LockHolder { Slot = 0, Pid = 41, ProcessName = "r", Count = 3 });
        block.Waiting.Add(new LockHolder { Slot = 5, Pid = 0 });
        holders.Holders.Blocks.Add(block);
        Assert.That(Response.Parser.ParseFrom(holders.ToByteArray()), Is.EqualTo(holders));

        var status = new Response { Status = new StatusReply { BrokerPid = 7, UptimeMs = 1234, SocketPath = "/s", ContainerCount = 1, ObjectCount = 2, ObjectBytes = 3, BytesInUse = 4, MemoryLimit = 5, SessionCount = 6 } };
        status.Status.Metrics.Add(new MetricSample { Name = "sharedstore.broker.operations", Unit = "{operation}", Tags = "kind=list", Value = 2 });
        Assert.That(Response.Parser.ParseFrom(status.ToByteArray()), Is.EqualTo(status));
    }

    [Test]
    public void ErrorCodes_MatchThePublicEnum()
    {
        // Contract: the wire's codes and SharedStore.ErrorCode are the same numbers (the broker casts one to the other).
        foreach (var code in Enum.GetValues<SharedStore.ErrorCode>())
        {
            if (code is SharedStore.ErrorCode.WouldDeadlock or SharedStore.ErrorCode.Busy)
            {
                continue; // client-side only (WouldDeadlock's number is the wire's BUSY, never sent; Busy is a full ring)
            }

            Assert.That(Enum.GetName((Protocol.ErrorCode)(int)code)!.Replace("_", "", StringComparison.Ordinal).ToUpperInvariant(),
                Is.EqualTo(code.ToString().ToUpperInvariant()), $"{code}");
        }
    }

    [Test]
    public void ReplicationCatalogValues_RoundTrip()
    {
        // The key-value bucket's values (docs/ARCHITECTURE.md §14) go through the same protoc/runtime pair.
        var c = new ReplicaContainerMeta { Name = "c", GroupId = 100, WritePolicy = Protocol.WritePolicy.CreatorOnly, BlockSize = 1 << 20, MaxMembers = 63, Owner = "h 1 /s" };
        var o = new ReplicaObjectMeta { Name = "o", Size = 1UL << 30, Incarnation = (7UL << 32) | 3 };
        var l = new ReplicaLease { Owner = "h 1 /s", Epoch = 7, HeartbeatUnixMs = 1_700_000_000_000, LeaseMs = 10_000 };
        var info = new ContainerInfo { Name = "c", Replication = new Replication { NatsUrl = "nats://a:4222", Stream = "SHAREDSTORE", Bucket = "SHAREDSTORE", StreamReplicas = 3 } };
        Assert.That(ReplicaContainerMeta.Parser.ParseFrom(c.ToByteArray()), Is.EqualTo(c));
        Assert.That(ReplicaObjectMeta.Parser.ParseFrom(o.ToByteArray()), Is.EqualTo(o));
        Assert.That(ReplicaLease.Parser.ParseFrom(l.ToByteArray()), Is.EqualTo(l));
        Assert.That(ContainerInfo.Parser.ParseFrom(info.ToByteArray()), Is.EqualTo(info));
    }
}
