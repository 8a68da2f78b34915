namespace SharedStore.Integration.Tests;

/// <summary>container_destroy and object_destroy across processes.</summary>
public sealed class DestroyTests : CrossProcessTest
{
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
}
