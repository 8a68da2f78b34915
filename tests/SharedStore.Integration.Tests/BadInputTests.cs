using SharedStore.Protocol;

namespace SharedStore.Integration.Tests;

/// <summary>
/// A client that speaks the protocol badly (garbage, requests before hello, oversized names, ids it has no right to)
/// must get an error or lose its own connection, and never crash the broker or change anyone else's state.
/// </summary>
public sealed class BadInputTests : CrossProcessTest
{
    private static long Gid => SharedStoreClient.ProcessGroupId;

    /// <summary>The broker is alive and the bystander's container and object are intact.</summary>
    private static void AssertBystanderIntact(BrokerProcess broker, SharedStoreClient bystander, SharedObject obj)
    {
        Assert.That(broker.Process.HasExited, Is.False, $"the broker died; stderr:\n{broker.Stderr}");
        obj.Write(0, [1, 2, 3], TimeSpan.FromSeconds(5));
        using (var lease = obj.Get(0, 3, TimeSpan.FromSeconds(5)))
        {
            Assert.That(lease.ReadOnlySpan.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
        }

        var entry = bystander.ListRaw().Containers.Single(c => c.Info.Name == "bystander");
        Assert.That(entry.Objects.Select(o => o.Info.Name), Is.EqualTo(new[] { "obj" }));
        using var fresh = ConnectInProcess(broker);
        Assert.That(fresh.ListRaw().Containers, Has.Count.GreaterThanOrEqualTo(1));
    }

    private static (SharedStoreClient Client, Container Container, SharedObject Object) Bystander(BrokerProcess broker)
    {
        var client = ConnectInProcess(broker);
        var c = client.CreateContainer("bystander", Gid);
        var o = c.CreateObject("obj", 4096);
        return (client, c, o);
    }

    [Test]
    public void Broker_MalformedProtobuf_ClosesThatConnectionAndKeepsServing()
    {
        using var broker = StartBroker();
        var (client, _, obj) = Bystander(broker);
        using (client)
        {
            foreach (byte[] garbage in new[]
            {
                new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF }, // varint never ends
                new byte[] { 0x0A, 0x7F, 0x01 }, // length-delimited field longer than the message
                Enumerable.Repeat((byte)0x52, 4096).ToArray(), // field 10 (hello) nested into itself: recursion
            })
            {
                using var raw = RawConnection.Open(broker.SocketPath);
                raw.SendRaw(garbage);
                raw.ExpectClosed();

                // The same garbage after a completed hello.
                using var raw2 = RawConnection.OpenWithHello(broker.SocketPath);
                raw2.SendRaw(garbage);
                raw2.ExpectClosed();
            }

            AssertBystanderIntact(broker, client, obj);
        }
    }

    [Test]
    public void Broker_RequestBeforeHello_AnswersInvalidArgumentAndCloses()
    {
        using var broker = StartBroker();
        var (client, _, obj) = Bystander(broker);
        using (client)
        {
            using var raw = RawConnection.Open(broker.SocketPath);
            var r = raw.Call(new Request { ContainerJoin = new ContainerJoin { Name = "bystander" } });
            Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument));
            raw.ExpectClosed();

            // Nothing was joined on its behalf.
            var entry = client.ListRaw().Containers.Single(c => c.Info.Name == "bystander");
            Assert.That(entry.MemberPids, Has.Count.EqualTo(1));
            AssertBystanderIntact(broker, client, obj);
        }
    }

    [Test]
    public void Broker_EmptyBodyOrSecondHello_AnswersInvalidArgumentAndKeepsTheConnection()
    {
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);
        Assert.That(raw.Call(new Request()).Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument));
        Assert.That(raw.Call(new Request { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion } }).Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument));
        raw.Send(new Request { Cancel = new Cancel { RequestId = 424242 } }); // nothing to cancel: ignored, no answer
        Assert.That(raw.Call(new Request { List = new ListRequest() }).Error, Is.EqualTo(Protocol.ErrorCode.Ok));
    }

    [Test]
    public void Broker_HugeNames_AnswersInvalidArgumentOrClosesAndKeepsServing()
    {
        // Bug: a 512 KiB name (a message well within the protocol's 1 MiB) could not even be sent: a SEQPACKET
        // message must fit the sender's SO_SNDBUF (212992 bytes by default here), which nobody raised.
        using var broker = StartBroker();
        var (client, container, obj) = Bystander(broker);
        using (client)
        {
            using var raw = RawConnection.OpenWithHello(broker.SocketPath);
            string name256 = new('n', 256);
            string nameHalfMiB = new('n', 512 * 1024);
            string twoByteChars = new('é', 128); // 256 UTF-8 bytes in 128 chars
            foreach (string name in new[] { name256, nameHalfMiB, twoByteChars, "with\0nul", "" })
            {
                Assert.That(raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = name, GroupId = Gid } }).Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument), "create");
                Assert.That(raw.Call(new Request { ContainerJoin = new ContainerJoin { Name = name } }).Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument), "join");
            }

            // Exactly 255 bytes is allowed.
            Assert.That(raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = new string('m', 255), GroupId = Gid } }).Error, Is.EqualTo(Protocol.ErrorCode.Ok));

            var e = Assert.Throws<SharedStoreException>(() => container.CreateObject(name256, 10));
            Assert.That(e!.Code, Is.EqualTo(ErrorCode.InvalidArgument));

            // A message above the protocol's 1 MiB: the broker drops the connection rather than read it truncated.
            using var raw2 = RawConnection.OpenWithHello(broker.SocketPath);
            var tooBig = new Request { Id = 1, ContainerJoin = new ContainerJoin { Name = new string('x', (1 << 20) + 16) } };
            raw2.SendRaw(Google.Protobuf.MessageExtensions.ToByteArray(tooBig));
            raw2.ExpectClosed();

            AssertBystanderIntact(broker, client, obj);
        }
    }

    [Test]
    public void Broker_IdsOfAContainerTheClientIsNotAMemberOf_AnswerNotFoundAndChangeNothing()
    {
        using var broker = StartBroker();
        var (client, container, obj) = Bystander(broker);
        using (client)
        {
            using var raw = RawConnection.OpenWithHello(broker.SocketPath);
            uint cid = container.Id;
            uint oid = obj.Id;
            var requests = new[]
            {
                new Request { ContainerLeave = new ContainerLeave { ContainerId = cid } },
                new Request { ContainerDestroy = new ContainerDestroy { ContainerId = cid }, TimeoutMs = 1000 },
                new Request { ObjectCreate = new ObjectCreate { ContainerId = cid, Name = "intruder", Size = 10 } },
                new Request { ObjectJoin = new ObjectJoin { ContainerId = cid, Name = "obj" } },
                new Request { ObjectLeave = new ObjectLeave { ContainerId = cid, ObjectId = oid } },
                new Request { ObjectDestroy = new ObjectDestroy { ContainerId = cid, ObjectId = oid }, TimeoutMs = 1000 },
                new Request { ContainerLeave = new ContainerLeave { ContainerId = uint.MaxValue } },
                new Request { ObjectDestroy = new ObjectDestroy { ContainerId = 0, ObjectId = 0 }, TimeoutMs = 1000 },
            };
            foreach (var req in requests)
            {
                var r = raw.Call(req);
                Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.NotFound), $"{req.BodyCase}: {r.Message}");
            }

            AssertBystanderIntact(broker, client, obj);
            var entry = client.ListRaw().Containers.Single(c => c.Info.Name == "bystander");
            Assert.That(entry.MemberPids, Has.Count.EqualTo(1));
            Assert.That(entry.Objects.Single().UseCount, Is.EqualTo(1u));
        }
    }

    [Test]
    public void Broker_ObjectIdOfAnotherContainer_AnswersNotFoundAndChangesNothing()
    {
        using var broker = StartBroker();
        var (client, _, obj) = Bystander(broker);
        using (client)
        {
            using var raw = RawConnection.OpenWithHello(broker.SocketPath);
            var mine = raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = "mine", GroupId = Gid } });
            Assert.That(mine.Error, Is.EqualTo(Protocol.ErrorCode.Ok), mine.Message);
            uint myCid = mine.Container.ContainerId;
            var own = raw.Call(new Request { ObjectCreate = new ObjectCreate { ContainerId = myCid, Name = "own", Size = 10 } });
            Assert.That(own.Error, Is.EqualTo(Protocol.ErrorCode.Ok), own.Message);
            Assert.That(own.Object.ObjectId, Is.Not.EqualTo(obj.Id));

            // The bystander's object id, named under the raw client's own container.
            foreach (var req in new[]
            {
                new Request { ObjectLeave = new ObjectLeave { ContainerId = myCid, ObjectId = obj.Id } },
                new Request { ObjectDestroy = new ObjectDestroy { ContainerId = myCid, ObjectId = obj.Id }, TimeoutMs = 1000 },
            })
            {
                var r = raw.Call(req);
                Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.NotFound), $"{req.BodyCase}: {r.Message}");
            }

            // Leaving its own object twice: the second is NotFound and does not drive the use count below zero.
            Assert.That(raw.Call(new Request { ObjectLeave = new ObjectLeave { ContainerId = myCid, ObjectId = own.Object.ObjectId } }).Error, Is.EqualTo(Protocol.ErrorCode.Ok));
            Assert.That(raw.Call(new Request { ObjectLeave = new ObjectLeave { ContainerId = myCid, ObjectId = own.Object.ObjectId } }).Error, Is.EqualTo(Protocol.ErrorCode.NotFound));
            var list = raw.Call(new Request { List = new ListRequest() }).List;
            Assert.That(list.Containers.Single(c => c.Info.Name == "mine").Objects.Single().UseCount, Is.EqualTo(0u));

            AssertBystanderIntact(broker, client, obj);
        }
    }
}
