namespace SharedStore.Integration.Tests;

/// <summary>Durable containers across a broker kill -9 and restart, with this process as the client.</summary>
public sealed class DurableSmokeTests : CrossProcessTest
{
    [Test]
    public void FlushedWrites_SurviveKill9AndRestart_WithGroupAndPolicy()
    {
        // Contract: after a flush, a kill -9 of the broker and a restart on the same socket, the durable container
        // and its object come back with their group and write policy, and the flushed bytes are intact. The restored
        // object is at version 1 with every block changed since 0 (issue 17).
        using var broker = StartBroker();
        string store = Path.Combine(broker.Directory, "store");
        Directory.CreateDirectory(store);
        byte[] data = new byte[(3 << 20) + 12345];
        new Random(11).NextBytes(data);
        using (var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath }))
        {
            var c = client.CreateContainer("dur", SharedStoreClient.ProcessGroupId, new ContainerOptions { DurablePath = store, WritePolicy = WritePolicy.CreatorOnly });
            Assert.That(c.IsDurable, Is.True);
            var o = c.CreateObject("o", data.Length);
            o.Write(0, data.AsSpan(0, 1 << 20));
            Assert.That(o.AWrite(1 << 20, data.AsSpan(1 << 20)).Wait(TimeSpan.FromSeconds(30)), Is.True);
            c.Flush(TimeSpan.FromSeconds(30));
            Assert.That(o.Version, Is.EqualTo(2), "a write and an applied asynchronous write (the flush waited for its locks)");
        }

        broker.Kill();
        using var again = Track(BrokerProcess.StartOn(broker.Directory, waitReady: true));
        using var client2 = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        var c2 = client2.JoinContainer("dur");
        Assert.That(c2.IsDurable, Is.True);
        Assert.That(c2.WritePolicy, Is.EqualTo(WritePolicy.CreatorOnly));
        Assert.That(c2.GroupId, Is.EqualTo(SharedStoreClient.ProcessGroupId));
        var o2 = c2.JoinObject("o");
        Assert.That(o2.Size, Is.EqualTo(data.Length));
        Assert.That(o2.Version, Is.EqualTo(1), "a durable restore is one version, published once the bytes are in place");
        Assert.That(o2.ChangedBlocksSince(0), Is.EqualTo(new long[] { 0, 1, 2, 3 }), "the restore wrote every block");
        using var lease = o2.Get(0, data.Length);
        Assert.That(lease.Torn, Is.False);
        Assert.That(lease.Span.SequenceEqual(data), Is.True, "the flushed bytes came back");
    }
}
