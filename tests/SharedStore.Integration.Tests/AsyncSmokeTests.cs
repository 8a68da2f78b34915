namespace SharedStore.Integration.Tests;

/// <summary>The asynchronous path, with this test process as the client of a real broker process.</summary>
public sealed class AsyncSmokeTests : CrossProcessTest
{
    private static SharedStoreClient ConnectInProcess(BrokerProcess broker, Action<SharedStoreClientOptions>? configure = null)
    {
        var o = new SharedStoreClientOptions { SocketPath = broker.SocketPath };
        configure?.Invoke(o);
        return SharedStoreClient.Connect(o);
    }

    [Test]
    public async Task AWrite_Inline_Staged_Chunked_AllLandAndReadBack()
    {
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = 1 << 20);
        using var c = client.CreateContainer("c", SharedStoreClient.ProcessGroupId);
        using var obj = c.CreateObject("o", 8L << 20);

        byte[] small = [.. Enumerable.Range(0, 64).Select(i => (byte)(i + 1))];
        var op1 = obj.AWrite(100, small);
        byte[] mid = new byte[100_000];
        Random.Shared.NextBytes(mid);
        var op2 = obj.AWrite(4096, mid);
        byte[] big = new byte[3 << 20];
        Random.Shared.NextBytes(big);
        var op3 = obj.AWrite(1 << 20, big);

        Assert.That(await op1, Is.EqualTo(64));
        Assert.That(await op2, Is.EqualTo(100_000));
        Assert.That(await op3, Is.EqualTo(3 << 20));
        Assert.That(op3.Status, Is.EqualTo(AsyncStatus.Completed));

        byte[] back = new byte[big.Length];
        var r = obj.ARead(1 << 20, back);
        Assert.That(await r, Is.EqualTo(big.Length));
        Assert.That(back, Is.EqualTo(big));
        using (var lease = obj.Get(100, 64))
        {
            Assert.That(lease.Span.ToArray(), Is.EqualTo(small));
        }

        using (var lease = obj.Get(4096, mid.Length))
        {
            Assert.That(lease.Span.ToArray(), Is.EqualTo(mid));
        }
    }
}
