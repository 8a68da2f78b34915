using SharedStore.Protocol;

namespace SharedStore.Integration.Tests;

/// <summary>container_destroy and object_destroy across processes.</summary>
public sealed class DestroyTests : CrossProcessTest
{
    private static long Gid => SharedStoreClient.ProcessGroupId;

    [Test]
    public void ContainerDestroy_AnotherMemberJoined_BlocksAndRefusesJoinsUntilItLeaves()
    {
        // Contract: container_destroy blocks while another member is joined, refuses joins with Destroyed from the
        // moment it is called, and completes when the member leaves; afterwards the container does not exist.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        var late = Connect(broker, "late");
        owner.Ok($"create-container doomed {SharedStoreClient.ProcessGroupId}");
        member.Ok("join-container doomed");

        int destroy = owner.Send("destroy-container 30000");
        owner.ExpectNoAnswerYet(destroy, because: "another member is still joined");
        late.Err("join-container doomed", "Destroyed");
        member.Err("destroy-container 1000", "Destroyed");
        owner.ExpectNoAnswerYet(destroy, TimeSpan.FromMilliseconds(100), "another member is still joined");

        member.Ok("leave-container");
        owner.ExpectOk(destroy);
        late.Err("join-container doomed", "NotFound");
    }

    [Test]
    public void ContainerDestroy_WaitingMemberProcessIsKilled_Completes()
    {
        // Contract: a member process that dies (SIGKILL) is released by the broker, so a destroy waiting for it
        // completes; the dead member's read locks do not keep the container alive.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        member.Ok("join-container c");
        member.Ok("join-object o");
        member.Ok("get o 0 10 1000");

        int destroy = owner.Send("destroy-container 30000");
        owner.ExpectNoAnswerYet(destroy, because: "the member is alive and joined");
        member.Kill();
        owner.ExpectOk(destroy, TimeSpan.FromSeconds(10));
    }

    [Test]
    public void ObjectDestroy_AnotherMemberUsesTheObject_BlocksUntilItLeaves()
    {
        // Contract: object_destroy blocks while another member has the object joined, refuses object joins meanwhile
        // (Destroyed), and completes when that member leaves the object.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        var late = Connect(broker, "late");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        member.Ok("join-container c");
        member.Ok("join-object o");
        late.Ok("join-container c");

        int destroy = owner.Send("destroy-object o 30000");
        owner.ExpectNoAnswerYet(destroy, because: "another member uses the object");
        late.Err("join-object o", "Destroyed");

        member.Ok("leave-object o");
        owner.ExpectOk(destroy);
        late.Err("join-object o", "NotFound");
    }

    [Test]
    public void ContainerDestroy_MemberOutlastsTheTimeout_FailsWithTimeoutAndStaysJoinable()
    {
        // Contract: a container_destroy whose waiting exceeds its timeout fails with Timeout and restores the
        // container: joins work again and its objects are intact.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        var late = Connect(broker, "late");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        owner.Ok("write o 0 16 11 5000");
        member.Ok("join-container c");

        owner.Err("destroy-container 300", "Timeout", TimeSpan.FromSeconds(15));

        late.Ok("join-container c");
        late.Ok("join-object o");
        Assert.That(ClientProcess.Field(late.Ok("get o 0 16 5000"), "first"), Is.EqualTo("11"));
    }

    [Test]
    public void ObjectDestroy_MemberOutlastsTheTimeout_FailsWithTimeoutAndStaysJoinable()
    {
        // Contract: an object_destroy whose waiting exceeds its timeout fails with Timeout and puts the object back.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        member.Ok("join-container c");
        member.Ok("join-object o");

        owner.Err("destroy-object o 300", "Timeout", TimeSpan.FromSeconds(15));
        member.Ok("leave-object o");
        member.Ok("join-object o");
    }

    [Test]
    public void ContainerLeave_WhileHoldingALease_IsRefusedWithInvalidOperation()
    {
        // Contract: container_leave is refused (InvalidOperationException) while this process still holds leases in
        // the container; after the put the leave works and a destroy by the creator no longer waits for it.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var member = Connect(broker, "member");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        member.Ok("join-container c");
        member.Ok("join-object o");
        string lease = member.Ok("get o 0 10 1000")[0];

        member.Err("leave-container", "InvalidOperationException");
        member.Ok($"put {lease}");
        member.Ok("leave-container");
        owner.Ok("destroy-container 5000", TimeSpan.FromSeconds(10));
    }

    [Test]
    public void ContainerDestroy_WhileThisProcessHoldsALease_IsRefusedAndTheLeaseStaysReadable()
    {
        // Contract: like container_leave and object_destroy, container_destroy is refused (InvalidOperationException)
        // while the calling process still holds leases in the container: destroying would unmap memory under a live
        // lease. After the put the destroy works.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        owner.Ok("write o 0 4096 9 1000");
        string lease = owner.Ok("get o 0 4096 1000")[0];

        owner.Err("destroy-container 1000", "InvalidOperationException");
        string sum = owner.Ok($"leaseread {lease}")[0];
        Assert.That(sum, Is.EqualTo(SharedStore.TestClient.Payload.Format(SharedStore.TestClient.Payload.Checksum(Enumerable.Repeat((byte)9, 4096).ToArray()))));
        owner.Ok($"put {lease}");
        owner.Ok("destroy-container 1000");
    }

    [Test]
    public void ClientDispose_WhileThisProcessHoldsALease_LeaseStaysReadable()
    {
        // Contract (SharedStoreClient.Dispose): containers still joined are left, but memory under a live lease stays
        // mapped: the lease reads the data and its put is harmless; the broker releases the membership and locks, so
        // another process's write proceeds.
        using var broker = StartBroker();
        var owner = Connect(broker, "owner");
        var other = Connect(broker, "other");
        owner.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        owner.Ok("create-object o 4096");
        string sum = owner.Ok("write-pattern o 0 4096 5 1000")[0];
        other.Ok("join-container c");
        other.Ok("join-object o");
        string lease = owner.Ok("get o 0 4096 1000")[0];

        owner.Ok("disconnect");
        Assert.That(owner.Ok($"leaseread {lease}")[0], Is.EqualTo(sum));
        other.Ok("write o 0 10 1 10000");
        owner.Ok($"put {lease}");
        owner.Ok("pid");
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
        WaitUntilJoinsAreRefused(() => c.JoinObject("x"), "the destroy of x to wait for the member");
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
        WaitUntilJoinsAreRefused(() => member.JoinContainer("c"), "the destroy of c to wait for the member");
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
        WaitUntilJoinsAreRefused(() => c.JoinObject("x"), "the first destroy to wait for the member");
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
    public void ObjectDestroy_ThousandsInRandomOrder_FreeEveryByteAndRecordAndTheSameCreatesReuseTheSameSpace()
    {
        // Contract (issue 16): destroying many objects one by one, in any order, gives back every byte and lock record:
        // the broker's charged bytes drop to what the container's shared segments' lock tables hold, the same creates
        // again land at the same addresses (the freed ranges coalesced back: nothing grew, no segment was added), the
        // reused lock records are zero (a new object's version is 0 after the old one was written), the objects'
        // other handles are closed, and a second cycle leaks nothing. The container destroy then frees the rest.
        const int count = 3000;
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        long before = client.Status().BytesInUse;
        var c = client.CreateContainer("many", Gid);
        var rng = new Random(16);
        long[] sizes = [.. Enumerable.Range(0, count).Select(_ => (long)rng.Next(1, 48 << 10))]; // about 72 MiB: two shared segments
        var order = Enumerable.Range(0, count).ToArray();
        long? emptied = null;
        nint[]? addresses = null;
        for (int cycle = 0; cycle < 2; cycle++)
        {
            var objects = new SharedObject[count];
            for (int i = 0; i < count; i++)
            {
                objects[i] = c.CreateObject($"o{i}", sizes[i]);
                Assert.That(objects[i].Version, Is.Zero, $"cycle {cycle}: object {i}'s reused lock record is zero");
            }

            nint[] now = [.. objects.Select(o => o.GetAttributes().DataAddress)];
            if (addresses is null)
            {
                addresses = now;
            }
            else
            {
                Assert.That(now, Is.EqualTo(addresses), "the same creates after a mass destroy reuse the same space");
            }

            var status = client.Status();
            Assert.That(status.ObjectCount, Is.EqualTo(count));
            var second = new Dictionary<int, SharedObject>();
            for (int i = 0; i < count; i += 10)
            {
                objects[i].Write(0, [1], TimeSpan.FromSeconds(5));
                second[i] = c.JoinObject($"o{i}"); // a second handle: the destroy through the first closes it too
            }

            rng.Shuffle(order);
            foreach (int i in order)
            {
                objects[i].Destroy(TimeSpan.FromSeconds(10));
                if (second.TryGetValue(i, out var other))
                {
                    Assert.Throws<ObjectDisposedException>(() => other.GetAttributes(), $"object {i}'s other handle is closed");
                }
            }

            status = client.Status();
            Assert.That(status.ObjectCount, Is.Zero);
            Assert.That(status.BytesInUse - before, Is.GreaterThan(0).And.LessThan(32L << 20), "only the shared segments' lock tables are left");
            emptied ??= status.BytesInUse;
            Assert.That(status.BytesInUse, Is.EqualTo(emptied), $"cycle {cycle}: nothing leaked");
        }

        c.Destroy(TimeSpan.FromSeconds(30));
        Assert.That(client.Status().BytesInUse, Is.EqualTo(before), "the container destroy freed its segments");
    }

    /// <summary>Waits until a destroy has started waiting, as every client can see it: from that moment the broker refuses
    /// joins with Destroyed (the first test of this file). <paramref name="join"/> must change nothing that lasts: a
    /// member's second join of its container (AlreadyExists until the destroy starts), or a join of an object, whose
    /// handle is disposed at once.</summary>
    private static void WaitUntilJoinsAreRefused(Func<IDisposable> join, string what) =>
        WaitUntil(() => JoinRefusedAsDestroyed(join), what);

    private static bool JoinRefusedAsDestroyed(Func<IDisposable> join)
    {
        try
        {
            join().Dispose();
            return false;
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.AlreadyExists)
        {
            return false;
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.Destroyed)
        {
            return true;
        }
    }
}
