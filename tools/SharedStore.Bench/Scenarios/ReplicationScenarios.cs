using System.Diagnostics;
using SharedStore.Tests.Nats;

namespace SharedStore.Bench;

/// <summary>
/// Replication between two broker processes (issue 18 part 5, docs/ARCHITECTURE.md §14) on the NATS scenarios'
/// three-node cluster: the owner broker talks to node 0 and the replica broker to node 1, as the NATS baselines'
/// producer and consumer do, each broker with its own socket and state directory (two hosts).
/// </summary>
internal static class ReplicationBench
{
    public static readonly TimeSpan Wait = TimeSpan.FromMinutes(5);

    public static BenchBroker StartBroker(BenchContext context, NatsCluster cluster, int node, string role) =>
        new(context, "--nats", cluster.Url(node), "--replication-lease-ms", "60000", "--state-dir", Path.Combine(context.WorkDirectory, $"state-{role}-{Guid.NewGuid():N}"));

    public static ContainerOptions Owner(int blockSize) => new()
    {
        BlockSize = blockSize,
        Replication = new ReplicationOptions { StreamReplicas = 3 },
    };

    public static ContainerOptions Replica() => new() { Replication = new ReplicationOptions { Replica = true } };

    public static string NewName(string what) => $"bench-{what}-{Guid.NewGuid():N}"[..32];
}

/// <summary>
/// <c>replicate-1gib</c>: GB/s of a 1 GiB object (1 MiB blocks, the baseline's message size) written on the owner
/// broker until the replica broker has applied every block (the replica client's WaitForVersion of the owner's
/// version after Flush). Timed from the first write: the owner's pass runs every 5 ms, so it publishes while the
/// object is written and a clock started at Flush would leave most of the work out; the time from the Flush call is
/// logged as well. Baseline: <c>jetstream-publish-1gib</c>'s JetStream figure (same bytes, message size, stream
/// replicas and nodes), measured in the same run and the same cluster, rounds alternating.
/// </summary>
internal sealed class Replicate1GiB : IScenario
{
    private const int BlockBytes = 1 << 20;

    public string Name => "replicate-1gib";

    public string Description => "GB/s of a 1 GiB object from the owner broker's first write to the replica broker having applied every block (R3 stream), vs the jetstream-publish-1gib baseline in the same cluster";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        long total = context.Scale >= 1 ? 1L << 30 : Math.Max(64L << 20, (long)((1L << 30) * context.Scale) / BlockBytes * BlockBytes);
        using var cluster = NatsBench.StartCluster(context);
        using var ownerBroker = ReplicationBench.StartBroker(context, cluster, 0, "owner");
        using var replicaBroker = ReplicationBench.StartBroker(context, cluster, 1, "replica");
        var replicated = new List<double>();
        var fromFlush = new List<double>();
        var baseline = new List<double>();
        byte[] data = new byte[BlockBytes];
        new Random(18).NextBytes(data);
        for (int round = 0; round < 3; round++)
        {
            for (int side = 0; side < 2; side++)
            {
                bool ours = (side == 0) == (round % 2 == 0);
                if (!ours)
                {
                    double js = NatsBench.Run(() => NatsBaselines.JetStreamPublishGBps(cluster, total, BlockBytes, context.Log));
                    baseline.Add(js);
                    context.Log.WriteLine($"  round {round}: jetstream {js:F3} GB/s");
                    continue;
                }

                // A container per round (its own subjects): the replica's object is created from the catalog and
                // applies every block of this round; the previous round's container is dropped first.
                string name = ReplicationBench.NewName("r1g");
                using var owner = ownerBroker.Connect();
                using var replica = replicaBroker.Connect();
                var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, ReplicationBench.Owner(BlockBytes));
                var oo = oc.CreateObject("o", total);
                var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, ReplicationBench.Replica());
                var ro = rc.WaitForObject("o", ReplicationBench.Wait);

                long t0 = Stopwatch.GetTimestamp();
                for (long at = 0; at < total; at += BlockBytes)
                {
                    data[0] = (byte)(at >> 20);
                    oo.Write(at, data);
                }

                long written = Stopwatch.GetTimestamp();
                oc.Flush(ReplicationBench.Wait);
                long flushed = Stopwatch.GetTimestamp();
                long v = oo.Version;
                ro.WaitForVersion(v, ReplicationBench.Wait);
                long applied = Stopwatch.GetTimestamp();
                using (var lease = ro.Get(total - BlockBytes, BlockBytes, ReplicationBench.Wait))
                {
                    if (lease.Span[0] != (byte)((total - BlockBytes) >> 20))
                    {
                        throw new InvalidOperationException("the replica's last block does not hold the owner's bytes");
                    }
                }

                double seconds = Stopwatch.GetElapsedTime(t0, applied).TotalSeconds;
                double sinceFlush = Stopwatch.GetElapsedTime(written, applied).TotalSeconds;
                replicated.Add(total / seconds / 1e9);
                fromFlush.Add(total / sinceFlush / 1e9);
                context.Log.WriteLine(
                    $"  round {round}: replicate {total / seconds / 1e9:F3} GB/s from the first write: written {Stopwatch.GetElapsedTime(t0, written).TotalSeconds:F2} s, " +
                    $"flushed {Stopwatch.GetElapsedTime(t0, flushed).TotalSeconds:F2} s, applied {seconds:F2} s (Flush call to applied {sinceFlush:F2} s)");
                rc.Dispose();
                oo.Dispose();
                oc.Destroy(ReplicationBench.Wait);
            }
        }

        return
        [
            new BenchResult(Name, "median-from-first-write", "GB/s", Median(replicated), "jetstream-publish-1gib", Median(baseline)),
            new BenchResult(Name, "median-from-flush-call", "GB/s", Median(fromFlush), "jetstream-publish-1gib", Median(baseline)),
        ];
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}

/// <summary>
/// <c>replica-lag</c>: ms from a 4 KiB Write on the owner broker (the clock starts before the call) to a client of
/// the replica broker seeing the owner's new version of the object (WaitForVersion, which returns once the replica
/// has applied the block under its write lock), one write at a time, no Flush (the owner's 5 ms pass sends it);
/// the first tenth dropped. Baseline: <c>nats-request-reply</c>'s 4 KiB round trip from node 0 to node 1 in the same
/// cluster, measured in the same run.
/// </summary>
internal sealed class ReplicaLag : IScenario
{
    private const int WriteBytes = 4 << 10;

    public string Name => "replica-lag";

    public string Description => "p50/p99 ms from a 4 KiB Write on the owner broker to its version on a replica broker (no Flush), vs a 4 KiB NATS request-reply round trip across nodes";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        int rounds = Math.Max(200, (int)(1000 * context.Scale));
        using var cluster = NatsBench.StartCluster(context);
        using var ownerBroker = ReplicationBench.StartBroker(context, cluster, 0, "owner");
        using var replicaBroker = ReplicationBench.StartBroker(context, cluster, 1, "replica");
        double[] rr = NatsBench.Run(() => NatsBaselines.RequestReplyMs(cluster, 0, 1, WriteBytes, rounds));

        string name = ReplicationBench.NewName("lag");
        using var owner = ownerBroker.Connect();
        using var replica = replicaBroker.Connect();
        var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, ReplicationBench.Owner(WriteBytes));
        var oo = oc.CreateObject("o", 256L * WriteBytes);
        var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, ReplicationBench.Replica());
        var ro = rc.WaitForObject("o", ReplicationBench.Wait);
        var data = new byte[WriteBytes];
        var rnd = new Random(18);
        int warm = rounds / 10;
        var ms = new List<double>(rounds);
        for (int i = 0; i < rounds + warm; i++)
        {
            rnd.NextBytes(data);
            long t0 = Stopwatch.GetTimestamp();
            oo.Write((long)(i % 256) * WriteBytes, data);
            long v = oo.Version;
            ro.WaitForVersion(v, ReplicationBench.Wait);
            double elapsed = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            if (i >= warm)
            {
                ms.Add(elapsed);
            }
        }

        ms.Sort();
        double[] lag = [.. ms];
        context.Log.WriteLine($"  replica lag:  p10 {NatsBaselines.Percentile(lag, 10):F3} p50 {NatsBaselines.Percentile(lag, 50):F3} p90 {NatsBaselines.Percentile(lag, 90):F3} p99 {NatsBaselines.Percentile(lag, 99):F3} max {lag[^1]:F3} ms");
        context.Log.WriteLine($"  request-reply: p10 {NatsBaselines.Percentile(rr, 10):F3} p50 {NatsBaselines.Percentile(rr, 50):F3} p90 {NatsBaselines.Percentile(rr, 90):F3} p99 {NatsBaselines.Percentile(rr, 99):F3} max {rr[^1]:F3} ms");
        rc.Dispose();
        oo.Dispose();
        oc.Destroy(ReplicationBench.Wait);
        return
        [
            new BenchResult(Name, "p50", "ms", NatsBaselines.Percentile(lag, 50), "nats-request-reply", NatsBaselines.Percentile(rr, 50)),
            new BenchResult(Name, "p99", "ms", NatsBaselines.Percentile(lag, 99), "nats-request-reply", NatsBaselines.Percentile(rr, 99)),
        ];
    }
}
