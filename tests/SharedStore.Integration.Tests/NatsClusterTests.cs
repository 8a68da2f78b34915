using System.Diagnostics;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using SharedStore.Tests.Nats;

namespace SharedStore.Integration.Tests;

/// <summary>The three-node JetStream cluster fixture (tests/Shared/Nats/NatsCluster.cs) that the replication tests
/// stand on: real nats-server processes, one of them killed and restarted.</summary>
public sealed class NatsClusterTests : CrossProcessTest
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(30);

    [Test]
    [Budget(120)]
    public async Task Cluster_StreamLeaderKilled_PublishGoesOnAndRestartedNodeCatchesUp()
    {
        // Contract: Start returns a cluster with a meta leader; a replicas=3 stream with one message per subject takes
        // a 1 MiB message (max_payload is raised); after kill -9 of the stream's leader node the other two elect a new
        // leader and accept publishes; the killed node restarted on its store catches up with every message.
        using var cluster = Track(NatsCluster.Start());
        Assert.That(cluster.Count, Is.EqualTo(3));
        await using var nats = new NatsConnection(new NatsOpts { Url = cluster.Urls, Name = "fixture-test", RequestTimeout = TimeSpan.FromSeconds(10) });
        var js = new NatsJSContext(nats);
        var info = await js.CreateStreamAsync(new StreamConfig("FIXTURE", ["fixture.>"]) { NumReplicas = 3, MaxMsgsPerSubject = 1, Storage = StreamConfigStorage.File });
        Assert.That(info.Info.Config.NumReplicas, Is.EqualTo(3));

        byte[] block = new byte[1 << 20]; // 1 MiB, 1048576
        new Random(18).NextBytes(block);
        (await js.PublishAsync("fixture.0", block)).EnsureSuccess();
        (await js.PublishAsync("fixture.0", block)).EnsureSuccess(); // replaces the first: one message per subject

        await info.RefreshAsync();
        int leader = cluster.IndexOf(info.Info.Cluster?.Leader);
        Assert.That(leader, Is.GreaterThanOrEqualTo(0), $"stream leader {info.Info.Cluster?.Leader}");
        cluster.Kill(leader);
        Assert.That(cluster.Pid(leader), Is.Zero);

        // The two left elect a stream leader; until they have, a publish fails (no responders or timeout): retry.
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                (await js.PublishAsync("fixture.1", block)).EnsureSuccess();
                break;
            }
            catch (Exception e) when (e is NatsJSException or NatsNoRespondersException or NatsException && sw.Elapsed < s_timeout)
            {
                await Task.Delay(100);
            }
        }

        TestContext.Progress.WriteLine($"publish accepted {sw.ElapsedMilliseconds} ms after kill -9 of the stream leader {cluster.ServerName(leader)}");
        cluster.Restart(leader);
        sw.Restart();
        while (cluster.StoredMessages(leader, "FIXTURE") != 2)
        {
            Assert.That(sw.Elapsed, Is.LessThan(s_timeout), $"restarted node stores {cluster.StoredMessages(leader, "FIXTURE")} messages");
            await Task.Delay(50);
        }

        await info.RefreshAsync();
        Assert.That(info.Info.State.Messages, Is.EqualTo(2));
        var last = await js.GetStreamAsync("FIXTURE");
        var msg = await last.GetAsync(new StreamMsgGetRequest { LastBySubj = "fixture.1" });
        Assert.That(msg.Message.Data.ToArray(), Is.EqualTo(block));
    }
}
