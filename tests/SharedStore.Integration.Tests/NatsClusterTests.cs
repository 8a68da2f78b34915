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
    private static readonly TimeSpan s_electionTimeout = TimeSpan.FromSeconds(90);

    [Test]
    [Budget(240)]
    public async Task Cluster_NodeKilled_PublishGoesOnAndRestartedNodeCatchesUp()
    {
        // Contract: Start returns a cluster with a meta leader; a replicas=3 stream with one message per subject takes
        // a 1 MiB message (max_payload is raised); after kill -9 of a node holding a replica (not the stream's leader:
        // the partition test below covers a leader's loss, and an election costs about 5 s) the other two accept
        // publishes; the killed node restarted on its store catches up with every message; frozen, it is out of service
        // but still there, and the stream goes on.
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
        int victim = (leader + 1) % 3;
        cluster.Kill(victim);
        Assert.That(cluster.Pid(victim), Is.Zero);

        // The client may have been connected to the killed node: it reconnects to another; retry until then.
        var sw = Stopwatch.StartNew();
        await PublishUntilAcceptedAsync(js, "fixture.1", block, cluster);
        TestContext.Progress.WriteLine($"publish accepted {sw.ElapsedMilliseconds} ms after kill -9 of {cluster.ServerName(victim)}");
        cluster.Restart(victim);
        sw.Restart();
        while (cluster.StoredMessages(victim, "FIXTURE") != 2)
        {
            Assert.That(sw.Elapsed, Is.LessThan(s_timeout), $"restarted node stores {cluster.StoredMessages(victim, "FIXTURE")} messages");
            await Task.Delay(50);
        }

        // Freeze (SIGSTOP) takes a node out of service without closing its sockets; the stream goes on with two.
        cluster.Freeze(victim);
        Assert.That(cluster.IsServing(victim), Is.False);
        Assert.That(cluster.Pid(victim), Is.Not.Zero, "frozen, not gone");
        (await js.PublishAsync("fixture.2", block)).EnsureSuccess();
        cluster.Thaw(victim);
        cluster.WaitReady();
        Assert.That(cluster.IsServing(victim), Is.True);

        await info.RefreshAsync();
        Assert.That(info.Info.State.Messages, Is.EqualTo(3));
        var last = await js.GetStreamAsync("FIXTURE");
        var msg = await last.GetAsync(new StreamMsgGetRequest { LastBySubj = "fixture.1" });
        Assert.That(msg.Message.Data.ToArray(), Is.EqualTo(block));
    }

    [Test]
    [Budget(240)]
    public async Task Partition_StreamLeaderCutOff_ItsClientCannotPublishWhileTheOthersCan_AndItCatchesUpWhenHealed()
    {
        // Contract: with PartitionableRoutes every route runs through the fixture's relays (one per pair once the
        // duplicates are closed). Partitioning the node that leads a replicas=3 stream leaves its client connected but
        // unable to get a publish acknowledged, while a client of another node publishes to the same stream once the
        // majority side has elected a leader; after Heal the cluster is ready again, the healed node's replica has
        // every acknowledged message and the unacknowledged one is nowhere.
        using var cluster = Track(NatsCluster.Start(new NatsClusterOptions { PartitionableRoutes = true }));
        var sw = Stopwatch.StartNew();
        while (cluster.RelayedRoutes != 3)
        {
            Assert.That(sw.Elapsed, Is.LessThan(s_timeout), $"{cluster.RelayedRoutes} relayed routes, expected one per pair");
            await Task.Delay(50);
        }

        await using var setup = new NatsConnection(new NatsOpts { Url = cluster.Urls, Name = "setup", RequestTimeout = TimeSpan.FromSeconds(10) });
        var info = await new NatsJSContext(setup).CreateStreamAsync(new StreamConfig("PART", ["part.>"]) { NumReplicas = 3, MaxMsgsPerSubject = 1, Storage = StreamConfigStorage.File });
        int cut = cluster.IndexOf(info.Info.Cluster?.Leader); // the stream's leader: the harder case, it must lose its lead
        Assert.That(cut, Is.GreaterThanOrEqualTo(0), $"stream leader {info.Info.Cluster?.Leader}");
        await using var majority = new NatsConnection(new NatsOpts { Url = cluster.Url((cut + 1) % 3), Name = "majority", RequestTimeout = TimeSpan.FromSeconds(10) });
        await using var cutOff = new NatsConnection(new NatsOpts { Url = cluster.Url(cut), Name = "cut-off", RequestTimeout = TimeSpan.FromSeconds(2) });
        var js = new NatsJSContext(majority);
        var cutJs = new NatsJSContext(cutOff);
        (await cutJs.PublishAsync("part.before", new byte[] { 1 })).EnsureSuccess(); // the node works before the cut

        cluster.Partition(cut);
        Assert.That(cluster.IsPartitioned(cut), Is.True);
        Assert.That(cluster.Pid(cut), Is.Not.Zero, "a partition leaves the server running");
        sw.Restart();
        await PublishUntilAcceptedAsync(js, "part.during", new byte[] { 2 }, cluster);
        TestContext.Progress.WriteLine($"majority side accepted a publish {sw.ElapsedMilliseconds} ms after the cut");
        Assert.That(
            async () => (await cutJs.PublishAsync("part.cut", new byte[] { 3 }, opts: new NatsJSPubOpts { RetryAttempts = 1 })).EnsureSuccess(),
            Throws.InstanceOf<NatsException>(),
            "a publish through the cut-off node is not acknowledged");
        Assert.That(cutOff.ConnectionState, Is.EqualTo(NatsConnectionState.Open), "its client stays connected");

        TestContext.Progress.WriteLine($"publish through the cut-off node refused {sw.ElapsedMilliseconds} ms after the cut");
        cluster.Heal(cut);
        sw.Restart();
        cluster.WaitReady();
        TestContext.Progress.WriteLine($"cluster ready {sw.ElapsedMilliseconds} ms after the heal");
        while (cluster.StoredMessages(cut, "PART") != 2 || cluster.RelayedRoutes != 3)
        {
            Assert.That(sw.Elapsed, Is.LessThan(2 * s_timeout), $"healed node stores {cluster.StoredMessages(cut, "PART")} messages, {cluster.RelayedRoutes} relayed routes");
            await Task.Delay(50);
        }

        TestContext.Progress.WriteLine($"healed node caught up {sw.ElapsedMilliseconds} ms after the heal");
        var stream = await js.GetStreamAsync("PART");
        Assert.That(stream.Info.State.Messages, Is.EqualTo(2), "part.before and part.during; part.cut was never acknowledged nor kept");
    }

    /// <summary>Publishes until JetStream acknowledges: after a node's loss the client reconnects and the others may
    /// have to elect a stream leader first (about 5 s here; under a load of several hundred on this 2-vCPU machine it
    /// once took over 30 s, hence 90 s). Fails with the last error, each node's view of the meta leader and the tail of
    /// each log.</summary>
    private static async Task PublishUntilAcceptedAsync(NatsJSContext js, string subject, byte[] data, NatsCluster cluster)
    {
        var sw = Stopwatch.StartNew();
        Exception? last = null;
        while (sw.Elapsed < s_electionTimeout)
        {
            try
            {
                (await js.PublishAsync(subject, data)).EnsureSuccess();
                return;
            }
            catch (NatsException e)
            {
                last = e;
                await Task.Delay(100);
            }
        }

        var report = new System.Text.StringBuilder($"no publish to {subject} acknowledged within {s_electionTimeout.TotalSeconds} s; last error: {last}");
        for (int i = 0; i < cluster.Count; i++)
        {
            report.Append(System.Globalization.CultureInfo.InvariantCulture, $"\n--- {cluster.ServerName(i)} pid {cluster.Pid(i)} serving {cluster.IsServing(i)} meta leader {(cluster.IsServing(i) ? cluster.MetaLeader(i) : "-")}:\n{cluster.LogTail(i, 20)}");
        }

        Assert.Fail(report.ToString());
    }
}
