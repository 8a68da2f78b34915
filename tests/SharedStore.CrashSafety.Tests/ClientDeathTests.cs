using System.Diagnostics;

namespace SharedStore.CrashSafety.Tests;

/// <summary>A dead client's holds are released at once and waiting destroys complete.</summary>
[TestFixture]
[Category("CrossProcess")]
public class ClientDeathTests
{
    [Test]
    public void ClientKilledWhileMember_PendingContainerDestroyCompletes()
    {
        // Contract: container_destroy blocks until every other member has left; a member that dies has left.
        using var broker = BrokerProcess.Start();
        using var client = broker.Connect();
        var con = client.CreateContainer("t", SharedStoreClient.ProcessGroupId, new ContainerOptions { BlockSize = 1 << 16 });
        con.CreateObject("T", 1 << 20);
        using var worker = new WorkerProcess(broker.SocketPath, "t", "T", 1);
        var sw = Stopwatch.StartNew();
        while (!worker.Ready)
        {
            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), "worker start");
            Thread.Sleep(5);
        }

        var destroy = Task.Run(() => con.Destroy(TimeSpan.FromSeconds(30)));
        BrokerObservations.WaitUntil(() => BrokerObservations.ContainerDestroyPending(client, "t"), "the destroy to wait for the worker");
        Assert.That(destroy.IsCompleted, Is.False, "destroy waits for the live worker");
        worker.Kill();
        Assert.That(destroy.Wait(TimeSpan.FromSeconds(10)), Is.True, "destroy completes once the worker is dead");
        Assert.That(client.ListRaw().Containers, Is.Empty);
    }
}
