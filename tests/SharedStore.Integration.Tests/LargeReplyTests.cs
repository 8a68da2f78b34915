using SharedStore.Protocol;

namespace SharedStore.Integration.Tests;

/// <summary>
/// Issue 13, finding 4: replies of any size. A reply larger than one datagram is sent in parts and assembled by the
/// client library; a reply the kernel refuses is logged and turned into an error the client sees; a request too large
/// for one message is the caller's InvalidArgument, not a lost connection. (`sharedstore ls` of 100 000 objects:
/// ScaleTests.)
/// </summary>
public sealed class LargeReplyTests : CrossProcessTest
{
    private static SharedStoreClient ConnectInProcess(BrokerProcess broker) =>
        SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(20) });

    [Test]
    public void Holders_16384HeldBlocks_ListsEveryBlock()
    {
        // Contract: holders lists every block someone holds, however many: 16 384 blocks of 4 KiB, each read-held by
        // another process, make a reply of several parts (it was cut at 2048 blocks, `truncated`).
        const int blocks = 16_384;
        using var broker = StartBroker();
        var reader = Connect(broker, "reader");
        reader.Ok($"create-container held {SharedStoreClient.ProcessGroupId} 4096");
        reader.Ok($"create-object o {blocks * 4096L}");
        string lease = reader.Ok($"get o 0 {blocks * 4096L} 10000")[0];

        using var client = ConnectInProcess(broker);
        var reply = client.Call(new Request { Holders = new HoldersRequest { ContainerName = "held", ObjectName = "o" } }, TimeSpan.FromSeconds(20), default).Response.Holders;
        Assert.That(reply.Blocks, Has.Count.EqualTo(blocks));
        Assert.That(reply.Blocks.Select(b => (long)b.Block), Is.EqualTo(Enumerable.Range(0, blocks).Select(b => (long)b)));
        Assert.That(reply.Blocks.All(b => b.Readers.Count == 1 && b.Readers[0].Pid == reader.Pid), "every block is read-held by the reader");
        Assert.That(reply.CalculateSize(), Is.GreaterThan(1 << 18), "the reply took several 128 KiB parts");
        reader.Ok($"put {lease}");
    }

    [Test]
    public void Reply_KernelRefusesIt_ClientGetsNoResourcesAndTheBrokerLogsReplyFailed()
    {
        // Contract: a reply the kernel refuses to send is never dropped in silence: the broker logs ReplyFailed (event
        // 50) and answers the request with an error (NoResources for EMSGSIZE), and the connection keeps working.
        // SHAREDSTORE_TEST_SEND_BUFFER_BYTES=8192 makes every session's send buffer 16 KiB (the kernel doubles it), below
        // the reply of 2000 objects (about 60 KB).
        string logDirectory = BrokerProcess.NewDirectory();
        try
        {
            string log = Path.Combine(logDirectory, "broker.log");
            using var broker = StartBroker(new Dictionary<string, string> { ["SHAREDSTORE_TEST_SEND_BUFFER_BYTES"] = "8192" }, "--log", log);
            using var client = ConnectInProcess(broker);
            using var con = client.CreateContainer("many", SharedStoreClient.ProcessGroupId);
            for (int i = 0; i < 2000; i++)
            {
                con.CreateObject($"object-number-{i}", 64).Dispose();
            }

            var e = Assert.Throws<SharedStoreException>(() => client.ListRaw());
            Assert.That(e!.Code, Is.EqualTo(ErrorCode.NoResources), e.Message);
            Assert.That(e.Message, Does.Contain("could not send its reply"));
            Assert.That(File.ReadAllText(log), Does.Contain("[ReplyFailed]").And.Contain("answering NoResources instead"));

            using var other = con.CreateObject("after", 64); // the same connection still answers
            Assert.That(broker.Process.HasExited, Is.False);
        }
        finally
        {
            Directory.Delete(logDirectory, recursive: true);
        }
    }

    [Test]
    public void Request_LargerThanOneMessage_InvalidArgumentAndTheConnectionStaysUsable()
    {
        // Contract: a request too large for one message (a durable path of 3 MiB) fails with InvalidArgument before it
        // is sent; the connection is not lost (it used to be: the failed send marked the broker lost).
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var e = Assert.Throws<SharedStoreException>(() => client.CreateContainer("big", SharedStoreClient.ProcessGroupId,
            new ContainerOptions { DurablePath = "/" + new string('a', 3 << 20) }));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.InvalidArgument), e.Message);
        Assert.That(client.IsBrokerLost, Is.False);
        using var con = client.CreateContainer("small", SharedStoreClient.ProcessGroupId);
        Assert.That(client.ListRaw().Containers.Select(c => c.Info.Name), Is.EqualTo(new[] { "small" }));
    }
}
