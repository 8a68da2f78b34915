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
}
