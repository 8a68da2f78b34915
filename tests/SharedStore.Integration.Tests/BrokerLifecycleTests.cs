namespace SharedStore.Integration.Tests;

/// <summary>Broker start-up next to leftovers of a killed broker, and refusal of a second broker on a live socket.</summary>
public sealed class BrokerLifecycleTests : CrossProcessTest
{
    [Test]
    public void BrokerStart_SocketLeftByAKilledBroker_StartsAndServes()
    {
        // Contract: a broker started on a socket path whose previous broker was SIGKILLed (its socket file is still
        // there) replaces the stale socket and serves clients.
        var first = StartBroker();
        var a = Connect(first, "a");
        a.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
        first.Kill();
        Assert.That(File.Exists(first.SocketPath), Is.True, "a SIGKILLed broker leaves its socket file behind");

        var second = Track(BrokerProcess.StartOn(first.Directory, waitReady: true));
        var b = Connect(second, "b");
        b.Err("join-container c", "NotFound"); // a new broker starts clean
        b.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");
    }

    [Test]
    public void BrokerStart_SocketServedByALiveBroker_ExitsWithCode3()
    {
        // Contract: a second broker on a socket a live broker serves exits with code 3 and leaves the first serving.
        var first = StartBroker();
        var a = Connect(first, "a");
        a.Ok($"create-container c {SharedStoreClient.ProcessGroupId}");

        var second = Track(BrokerProcess.StartOn(first.Directory, waitReady: false));
        Assert.That(second.WaitForExit(TimeSpan.FromSeconds(30)), Is.EqualTo(3), second.Stderr);

        var b = Connect(first, "b");
        b.Ok("join-container c");
        Assert.That(first.Process.HasExited, Is.False);
    }
}
