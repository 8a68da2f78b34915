using SharedStore.Protocol;

namespace SharedStore.Integration.Tests;

/// <summary>Regression tests for bugs found in the review of the synchronous core (one region per bug).</summary>
public sealed class ReviewRegressionTests : CrossProcessTest
{
    private static long Gid => SharedStoreClient.ProcessGroupId;

    private static SharedStoreClient ConnectInProcess(BrokerProcess broker) =>
        SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(10) });

    private static ContainerEntry Entry(SharedStoreClient client, string name) =>
        client.ListRaw().Containers.Single(c => c.Info.Name == name);

    [Test]
    public void ContainerJoin_SecondJoinBySameClient_IsRefusedAndLeavesNoPhantomMember()
    {
        // Bug: AddMember stored the new membership in the container's slot table before Dictionary.Add threw on the
        // session's duplicate key, so a second join by the same client left a phantom member no one could remove (not
        // even the session's close): container_destroy then waited for it forever.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("twice", Gid);
        var e = Assert.Throws<SharedStoreException>(() => client.JoinContainer("twice"));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.AlreadyExists), e.Message);
        Assert.That(Entry(client, "twice").MemberSlots, Has.Count.EqualTo(1));
        Assert.DoesNotThrow(() => c.Destroy(TimeSpan.FromSeconds(5)), "no other member: destroy completes at once");
    }

    [Test]
    public void ObjectDestroy_DestroyerLeavesContainerWhileWaiting_TimesOutAndKeepsTheObjectForOtherUsers()
    {
        // Bug: when the destroyer's membership was gone by the time its wait ended (it left the container, or its
        // process died and the session close won the race), DestroyObject skipped the restore and freed the object
        // although another member still used it: its memory was punched and its lock records zeroed under that
        // member, and handed to the next object created.
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);
        var created = raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = "c", GroupId = Gid } });
        Assert.That(created.Error, Is.EqualTo(Protocol.ErrorCode.Ok), created.Message);
        uint cid = created.Container.ContainerId;
        var obj = raw.Call(new Request { ObjectCreate = new ObjectCreate { ContainerId = cid, Name = "x", Size = 8192 } });
        Assert.That(obj.Error, Is.EqualTo(Protocol.ErrorCode.Ok), obj.Message);

        using var member = ConnectInProcess(broker);
        var c = member.JoinContainer("c");
        var x = c.JoinObject("x");
        x.Write(0, [7, 7, 7], TimeSpan.FromSeconds(5));

        ulong destroy = raw.Send(new Request { ObjectDestroy = new ObjectDestroy { ContainerId = cid, ObjectId = obj.Object.ObjectId }, TimeoutMs = 1500 });
        Thread.Sleep(200); // the destroy is waiting for the member
        var left = raw.Call(new Request { ContainerLeave = new ContainerLeave { ContainerId = cid } });
        Assert.That(left.Error, Is.EqualTo(Protocol.ErrorCode.Ok), left.Message);
        var answer = raw.Receive(TimeSpan.FromSeconds(10));
        Assert.That(answer, Is.Not.Null);
        Assert.That(answer!.Id, Is.EqualTo(destroy));
        Assert.That(answer.Error, Is.EqualTo(Protocol.ErrorCode.Timeout), "the member still uses the object: the destroy must time out");

        var entry = Entry(member, "c");
        Assert.That(entry.Objects.Select(o => o.Info.Name), Is.EqualTo(new[] { "x" }), "the object must survive");
        Assert.That(entry.Objects.Single().UseCount, Is.EqualTo(1u));
        using (var lease = x.Get(0, 3, TimeSpan.FromSeconds(5)))
        {
            Assert.That(lease.ReadOnlySpan.ToArray(), Is.EqualTo(new byte[] { 7, 7, 7 }), "the object's memory must be intact");
        }

        // The destroy was abandoned, so joins work again.
        using var again = c.JoinObject("x");
        Assert.That(again.Id, Is.EqualTo(x.Id));
    }

    [Test]
    public void ContainerDestroy_DestroyerLeavesWhileWaiting_TimesOutAndRestoresTheContainer()
    {
        // Bug: same hole for containers: once the destroyer had left, a timed-out destroy answered OK and left the
        // container marked destroying for good: every later join got Destroyed while the remaining members went on.
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);
        var created = raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = "c", GroupId = Gid } });
        Assert.That(created.Error, Is.EqualTo(Protocol.ErrorCode.Ok), created.Message);
        uint cid = created.Container.ContainerId;

        using var member = ConnectInProcess(broker);
        var c = member.JoinContainer("c");

        ulong destroy = raw.Send(new Request { ContainerDestroy = new ContainerDestroy { ContainerId = cid }, TimeoutMs = 1500 });
        Thread.Sleep(200);
        var left = raw.Call(new Request { ContainerLeave = new ContainerLeave { ContainerId = cid } });
        Assert.That(left.Error, Is.EqualTo(Protocol.ErrorCode.Ok), left.Message);
        var answer = raw.Receive(TimeSpan.FromSeconds(10));
        Assert.That(answer, Is.Not.Null);
        Assert.That(answer!.Id, Is.EqualTo(destroy));
        Assert.That(answer.Error, Is.EqualTo(Protocol.ErrorCode.Timeout), "another member is still joined: the destroy must time out");

        using var late = ConnectInProcess(broker);
        Assert.DoesNotThrow(() => late.JoinContainer("c").Dispose(), "the destroy was abandoned: joins must work again");
        c.Dispose();
    }

    [Test]
    public void ObjectDestroy_TwoWaitingCallsWithOneRequestId_SessionCloseStillCancelsTheFirst()
    {
        // Bug: the broker kept a blocking call's CancellationTokenSource in a dictionary keyed by the client's request
        // id and overwrote it on a duplicate id; the duplicate's completion then removed the entry of the first call.
        // That call could no longer be canceled, not even by the session's close: the destroy waited forever (with
        // an infinite timeout) and the object stayed Destroying, refusing joins, after its destroyer was gone.
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);
        var created = raw.Call(new Request { ContainerCreate = new ContainerCreate { Name = "c", GroupId = Gid } });
        Assert.That(created.Error, Is.EqualTo(Protocol.ErrorCode.Ok), created.Message);
        uint cid = created.Container.ContainerId;
        var obj = raw.Call(new Request { ObjectCreate = new ObjectCreate { ContainerId = cid, Name = "x", Size = 4096 } });
        Assert.That(obj.Error, Is.EqualTo(Protocol.ErrorCode.Ok), obj.Message);

        using var member = ConnectInProcess(broker);
        var c = member.JoinContainer("c");
        using var x = c.JoinObject("x");

        var destroy = new ObjectDestroy { ContainerId = cid, ObjectId = obj.Object.ObjectId };
        raw.Send(new Request { Id = 7, ObjectDestroy = destroy, TimeoutMs = uint.MaxValue });
        Thread.Sleep(200); // the first destroy waits for the member
        raw.Send(new Request { Id = 7, ObjectDestroy = destroy, TimeoutMs = uint.MaxValue });
        var second = raw.Receive(TimeSpan.FromSeconds(10));
        Assert.That(second, Is.Not.Null);
        Assert.That(second!.Error, Is.Not.EqualTo(Protocol.ErrorCode.Ok), "the duplicate must be refused");

        raw.Dispose(); // the destroyer goes away: its waiting destroy must be canceled and the object put back

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            try
            {
                using var again = c.JoinObject("x");
                break;
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.Destroyed && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(20);
            }
        }

        Assert.That(Entry(member, "c").Objects.Single().UseCount, Is.EqualTo(1u));
    }

    [Test]
    public void ContainerDestroy_TimeoutAboveInt32Milliseconds_Succeeds()
    {
        // Bug: Call handed timeout + 5 s to WaitHandle.WaitAny, which accepts at most int.MaxValue ms (24.8 days).
        // A destroy with a 30-day timeout was sent, then the client threw ArgumentOutOfRangeException while the broker
        // destroyed the container: the handle stayed open on a container that no longer existed.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("long", Gid);
        Assert.DoesNotThrow(() => c.Destroy(TimeSpan.FromDays(30)));
        Assert.That(client.ListRaw().Containers.Any(e => e.Info.Name == "long"), Is.False);
        Assert.Throws<ObjectDisposedException>(() => c.CreateObject("o", 1));
    }

    [Test]
    public void ContainerDestroy_NegativeTimeout_ThrowsBeforeSendingAndKeepsTheContainer()
    {
        // Bug: a negative timeout (other than Infinite) was sent as timeout_ms 0, so the broker destroyed the
        // container, and then WaitAny threw ArgumentOutOfRangeException on the negative wait: the caller was told the
        // call was invalid after it had taken effect.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("neg", Gid);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Destroy(TimeSpan.FromSeconds(-5)));
        Assert.That(client.ListRaw().Containers.Any(e => e.Info.Name == "neg"), Is.True, "an invalid argument must not be sent");
        Assert.DoesNotThrow(() => c.CreateObject("o", 1).Dispose());
    }

    [Test]
    public void ObjectLease_PutAfterItsHandleWasLeftWithAnotherHandleOpen_ReleasesTheReadHold()
    {
        // Bug: Leave() of one of two handles to the same object is allowed while this process holds leases (holds
        // are per process, so the other handle may own them), but SharedObject.Put skipped the release once its
        // handle was closed, "because the broker released everything". The membership was still alive, so the read
        // hold stayed forever: writers of that block waited until the process exited.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("c", Gid);
        var h1 = c.CreateObject("x", 4096);
        using var h2 = c.JoinObject("x");
        var lease = h1.Get(0, 10, TimeSpan.FromSeconds(5));
        h1.Dispose();
        lease.Dispose();
        Assert.DoesNotThrow(() => h2.Write(0, [1, 2, 3], TimeSpan.FromSeconds(2)), "the lease was put: nothing holds the block");
    }

    [Test]
    public void ObjectDestroy_ThroughOneHandleWhileAnotherHandlesLeaseIsHeld_IsRefusedAndClosesAllHandlesWhenDone()
    {
        // Bug: Destroy skipped the lease check when another handle to the object was open, so the broker freed the
        // object (pages punched, lock records zeroed) under a live lease of this very process; the other handle stayed
        // open and kept locking the freed records.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("c", Gid);
        var h1 = c.CreateObject("x", 4096);
        var h2 = c.JoinObject("x");
        h1.Write(0, [5, 5, 5], TimeSpan.FromSeconds(5));
        var lease = h1.Get(0, 3, TimeSpan.FromSeconds(5));
        Assert.Throws<InvalidOperationException>(() => h2.Destroy(TimeSpan.FromSeconds(5)));
        Assert.That(lease.ReadOnlySpan.ToArray(), Is.EqualTo(new byte[] { 5, 5, 5 }));
        lease.Dispose();

        h2.Destroy(TimeSpan.FromSeconds(5));
        Assert.Throws<ObjectDisposedException>(() => h1.Get(0, 1, TimeSpan.FromSeconds(1)), "every handle of a destroyed object is closed");
        Assert.That(Entry(client, "c").Objects, Is.Empty);
    }

    [Test]
    public void Call_RequestAboveTheDefaultSocketBuffer_GetsTheBrokersAnswerAndTheClientStaysUsable()
    {
        // Bug: sendmsg of a SEQPACKET message larger than SO_SNDBUF (208 KiB by default) fails with EMSGSIZE; the
        // client took that for a dead broker, marked itself lost and threw BrokerUnavailable for every later call.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var e = Assert.Throws<SharedStoreException>(() => client.CreateContainer(new string('n', 300_000), Gid));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.InvalidArgument), e.Message);
        Assert.That(client.IsBrokerLost, Is.False);
        Assert.DoesNotThrow(() => client.CreateContainer("after", Gid).Dispose());
    }

    [Test]
    public void List_ReplyAboveTheDefaultSocketBuffer_Arrives()
    {
        // Bug: the same limit on the broker's side: a list reply over 208 KiB (a few thousand objects) failed to send,
        // silently, and the client waited for its request timeout.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("many", Gid);
        const int count = 3000;
        string prefix = new('o', 100);
        var objects = new List<SharedObject>();
        for (int i = 0; i < count; i++)
        {
            objects.Add(c.CreateObject($"{prefix}{i}", 64));
        }

        Assert.That(Entry(client, "many").Objects, Has.Count.EqualTo(count));
    }
}
