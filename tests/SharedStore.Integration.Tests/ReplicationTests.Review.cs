using System.Diagnostics;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using SharedStore.Broker;

namespace SharedStore.Integration.Tests;

public sealed partial class ReplicationTests
{
    [Test]
    public async Task AWatermark_IsNeverPublished_ForABlockWhosePublishFailed()
    {
        // Contract (§14, "Why the watermark holds"): a watermark with v0 follows every block message of version <= v0.
        // Here no block message can ever be stored: the stream refuses messages above 1 KiB, and the object's one
        // block is 4 KiB (announcements and watermarks are empty, so they are stored). So the replica must never see a
        // watermark: its object's version stays 0. Review of the pipelined passes: a failed publish reaped by the pass
        // thread's ReapReady just before a scan in the same gate hold is re-marked dirty only after that scan, which
        // counts the block as sent and publishes a watermark.
        var (ob, rb) = StartBrokers();
        string name = NewName("wmfail");
        string streamName = $"SSREVIEW{Guid.NewGuid():N}";
        await using (var nats = new NatsConnection(new NatsOpts { Url = Cluster.Urls }))
        {
            var js = new NatsJSContext(nats);
            await js.CreateStreamAsync(new StreamConfig(streamName, [ReplicationNames.StreamSubjects(streamName)])
            {
                MaxMsgsPerSubject = 1,
                MaxMsgSize = 1024,
                NumReplicas = 3,
                Storage = StreamConfigStorage.File,
            });
        }

        using var owner = Connect(ob);
        using var replica = Connect(rb);
        var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions
        {
            BlockSize = 4096,
            Replication = new ReplicationOptions { StreamReplicas = 3, Stream = streamName },
        });
        var oo = oc.CreateObject("o", 4096);
        var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions { Replication = new ReplicationOptions { Replica = true, Stream = streamName } });
        var ro = rc.WaitForObject("o", Wait);
        oo.Write(0, Enumerable.Repeat((byte)7, 4096).ToArray());
        Assert.That(oo.Version, Is.EqualTo(1));

        // Every pass republishes the block (a failure re-marks it dirty), so each 5 ms pass is a chance for the race.
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(15) && ro.Version == 0)
        {
            Thread.Sleep(10); // a poll interval
        }

        await using (var nats = new NatsConnection(new NatsOpts { Url = Cluster.Urls }))
        {
            var stream = await new NatsJSContext(nats).GetStreamAsync(streamName, new StreamInfoRequest { SubjectsFilter = ">" });
            var subjects = stream.Info.State.Subjects ?? new Dictionary<string, long>();
            Assert.That(subjects.Keys.Any(k => k.Contains(".b.", StringComparison.Ordinal)), Is.False, $"no block message is stored (subjects: {string.Join(", ", subjects.Keys)})");
        }

        Assert.That(ro.Version, Is.EqualTo(0), $"the replica applied a watermark after {sw.Elapsed.TotalSeconds:0.0} s although no block message was ever stored");
        Assert.That(ro.Get(0, 4096, Wait).Span.ToArray().All(b => b == 0), Is.True);
    }
}
