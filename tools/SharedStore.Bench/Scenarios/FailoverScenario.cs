using System.Diagnostics;
using NATS.Client.KeyValueStore;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static IEnumerable<IScenario> FailoverScenarios() => [new Failover()];
}

/// <summary>
/// <c>failover</c> (issue 18 part 5): ms from the owner broker's kill -9 to a write accepted by the new owner, which
/// took the container over (<c>ReplicationOptions.TakeOver</c>: 1.5 lease times of watching the lease unchanged, the
/// revision-checked update, the container rebuilt from the stream). Each round: a three-node cluster (one for the
/// whole run), an owner and a taker broker (lease 1000 ms), a container of 1 MiB in 4 KiB blocks written and flushed
/// (stream replicas 3), the owner killed, the takeover called at once, one 4 KiB write on the new owner. Baselines in
/// the same run: the lease time used (the failover can not be shorter than 1.5 of it), and for the part beyond that
/// wait, a revision-checked KV update round trip of the same bucket (median of 50).
/// </summary>
internal sealed class Failover : IScenario
{
    private const int LeaseMs = 1000;

    public string Name => "failover";

    public string Description => "ms from the owner's kill -9 to the first write accepted by the broker that took it over (lease 1000 ms), vs the lease time; the part beyond the 1.5-lease wait vs a KV update round trip";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        int rounds = context.Scale >= 1 ? 5 : 3;
        using var cluster = NatsBench.StartCluster(context);
        var failovers = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            using var owner = new BenchBroker(context, "--nats", cluster.Url(0), "--replication-lease-ms", LeaseMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
            using var taker = new BenchBroker(context, "--nats", cluster.Url(1), "--replication-lease-ms", LeaseMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
            string name = $"failover-{Guid.NewGuid():N}";
            var data = new byte[1 << 20];
            new Random(round).NextBytes(data);
            long killed;
            using (var oc = owner.Connect())
            {
                var c = oc.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions
                {
                    BlockSize = 4096,
                    Replication = new ReplicationOptions { StreamReplicas = 3 },
                });
                c.CreateObject("o", data.Length).Write(0, data);
                c.Flush(TimeSpan.FromSeconds(60));
                owner.Kill();
                killed = Stopwatch.GetTimestamp();
            }

            using var tc = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = taker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(60) });
            var nc = tc.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions { Replication = new ReplicationOptions { TakeOver = true } });
            long tookOver = Stopwatch.GetTimestamp();
            var no = nc.JoinObject("o");
            no.Write(0, data.AsSpan(0, 4096));
            double ms = Stopwatch.GetElapsedTime(killed).TotalMilliseconds;
            failovers.Add(ms);
            context.Log.WriteLine($"  round {round}: kill -9 to the new owner's first write {ms:F0} ms (the takeover call returned after {Stopwatch.GetElapsedTime(killed, tookOver).TotalMilliseconds:F0} ms)");
            foreach (string line in taker.LogLines().Where(l => l.Contains("taken over", StringComparison.Ordinal)))
            {
                context.Log.WriteLine($"    taker: {line.Trim()}");
            }

            nc.Destroy(TimeSpan.FromSeconds(30));
        }

        double[] kv = NatsBench.Run(() => KvUpdateMs(cluster, 50));
        double median = Stats.Median(failovers);
        double kvMedian = Stats.Median(kv);
        context.Log.WriteLine($"  kv update round trip: p50 {kvMedian:F2} ms, max {kv.Max():F2} ms");
        return
        [
            new BenchResult(Name, "median", "ms", median, $"lease-ttl-{LeaseMs}ms", LeaseMs),
            new BenchResult(Name, "beyond-1.5-lease-wait", "ms", median - (1.5 * LeaseMs), "kv-update-round-trip", kvMedian),
        ];
    }

    /// <summary>Revision-checked updates of one key of the replication bucket from a client on node 1, one at a time.</summary>
    private static async Task<double[]> KvUpdateMs(Tests.Nats.NatsCluster cluster, int rounds)
    {
        await using var nats = NatsBench.Connect(cluster, 1, "bench-kv");
        var kv = await new NatsKVContext(new NATS.Client.JetStream.NatsJSContext(nats)).GetStoreAsync("SHAREDSTORE");
        ulong revision = await kv.PutAsync("bench.failover", new byte[64]);
        var ms = new double[rounds];
        for (int i = 0; i < rounds; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            revision = await kv.UpdateAsync("bench.failover", new byte[64], revision);
            ms[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }

        await kv.DeleteAsync("bench.failover");
        return ms;
    }
}
