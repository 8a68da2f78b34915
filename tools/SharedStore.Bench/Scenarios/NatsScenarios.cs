using System.Buffers.Binary;
using System.Diagnostics;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using SharedStore.Tests.Nats;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    // The NATS baselines of issue 18. The replication scenarios (replicate-1gib against jetstream-publish-1gib,
    // replica-lag against nats-request-reply) go beside them and call NatsBaselines in the same run.
    private static IEnumerable<IScenario> NatsScenarios() =>
    [
        new JetStreamPublish1GiB(),
        new NatsRequestReply(),
        new Replicate1GiB(),
        new ReplicaLag(),
    ];
}

/// <summary>
/// The cluster every NATS scenario runs against: three nats-server processes on loopback
/// (tests/Shared/Nats/NatsCluster.cs), stores under the bench's scratch folder (same disk as /var/tmp), and
/// connections made the same way for every scenario so that the replication scenarios and their baselines compare
/// like with like.
/// </summary>
internal static class NatsBench
{
    /// <summary>Stream used by the JetStream baseline (subjects <c>bench.block.N</c>).</summary>
    public const string BlockStream = "BENCH_BLOCKS";

    /// <summary>Starts a three-node cluster under <paramref name="context"/>'s scratch folder.</summary>
    public static NatsCluster StartCluster(BenchContext context)
    {
        var sw = Stopwatch.StartNew();
        var cluster = NatsCluster.Start(new NatsClusterOptions { ParentDirectory = context.WorkDirectory });
        context.Log.WriteLine($"nats: 3-node cluster ready in {sw.ElapsedMilliseconds} ms ({cluster.Urls}), meta leader {cluster.MetaLeader(0)}");
        return cluster;
    }

    /// <summary>A client connected to node <paramref name="node"/> only: a broker talks to the server on its own
    /// host, and the bench puts producer and consumer on different nodes as different hosts would be.</summary>
    public static NatsConnection Connect(NatsCluster cluster, int node, string name) =>
        new(new NatsOpts { Url = cluster.Url(node), Name = name, RequestTimeout = TimeSpan.FromSeconds(30) });

    /// <summary>Runs an async body to completion on the thread pool (the scenarios' interface is synchronous).</summary>
    public static T Run<T>(Func<Task<T>> body) => Task.Run(body).GetAwaiter().GetResult();
}

/// <summary>The NATS figures the replication scenarios are compared with, measured by plain NATS.Net clients.</summary>
internal static class NatsBaselines
{
    /// <summary>Messages in flight: JetStream publishes awaiting their ack, and core messages published but not yet
    /// received. 16 MiB of 1 MiB messages: enough to keep the route and the disk busy, below the servers'
    /// 64 MiB max_pending.</summary>
    public const int Window = 16;

    /// <summary>
    /// GB/s of <paramref name="totalBytes"/> in <paramref name="messageBytes"/> messages published by one client on
    /// node 0 to a replicas=3 file stream with max_msgs_per_subject=1 and one subject per block
    /// (<c>bench.block.N</c>), with <see cref="Window"/> acks in flight, consumed by an ordered consumer of another
    /// client on node 1; from the first publish until the consumer has received every message (each checked for
    /// its block number and length). The stream is recreated first, so every round starts empty.
    /// </summary>
    public static async Task<double> JetStreamPublishGBps(NatsCluster cluster, long totalBytes, int messageBytes, TextWriter log)
    {
        int count = (int)(totalBytes / messageBytes);
        await using var producer = NatsBench.Connect(cluster, 0, "bench-js-producer");
        await using var consumerConnection = NatsBench.Connect(cluster, 1, "bench-js-consumer");
        var js = new NatsJSContext(producer);
        try
        {
            await js.DeleteStreamAsync(NatsBench.BlockStream);
        }
        catch (NatsJSApiException e) when (e.Error.Code == 404)
        {
            // first round
        }

        await js.CreateStreamAsync(new StreamConfig(NatsBench.BlockStream, ["bench.block.>"])
        {
            NumReplicas = 3,
            MaxMsgsPerSubject = 1,
            Storage = StreamConfigStorage.File,
        });
        var consumerJs = new NatsJSContext(consumerConnection);
        var consumer = await consumerJs.CreateOrderedConsumerAsync(NatsBench.BlockStream);
        byte[][] payloads = Payloads(messageBytes);

        using var done = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        int received = 0;
        var consume = Task.Run(async () =>
        {
            await foreach (var msg in consumer.ConsumeAsync<NatsMemoryOwner<byte>>(opts: new NatsJSConsumeOpts { MaxMsgs = 2 * Window }, cancellationToken: done.Token))
            {
                using NatsMemoryOwner<byte> data = msg.Data;
                int block = BinaryPrimitives.ReadInt32LittleEndian(data.Span);
                if (data.Length != messageBytes || block != received || msg.Subject != $"bench.block.{block}")
                {
                    throw new InvalidOperationException($"message {received}: block {block}, {data.Length} bytes, subject {msg.Subject}");
                }

                if (++received == count)
                {
                    return;
                }
            }
        });

        var inFlight = new Queue<ValueTask<PubAckResponse>>();
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
        {
            if (inFlight.Count == Window)
            {
                (await inFlight.Dequeue()).EnsureSuccess();
            }

            // Message i - Window is acknowledged by now, so its buffer is free to carry message i.
            byte[] payload = payloads[i % Window];
            BinaryPrimitives.WriteInt32LittleEndian(payload, i);
            inFlight.Enqueue(js.PublishAsync($"bench.block.{i}", payload));
        }

        while (inFlight.Count > 0)
        {
            (await inFlight.Dequeue()).EnsureSuccess();
        }

        long acked = Stopwatch.GetTimestamp();
        await consume.WaitAsync(done.Token);
        double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        log.WriteLine($"  jetstream: {count} x {messageBytes} B, all acked after {Stopwatch.GetElapsedTime(t0, acked).TotalSeconds:F2} s, all consumed after {seconds:F2} s");
        return totalBytes / seconds / 1e9;
    }

    /// <summary>
    /// GB/s of the same messages over core NATS (no JetStream: no stream, no disk, no replicas) from a client on
    /// node 0 to a subscriber on node 1, at most <see cref="Window"/> messages published and not yet received (the
    /// two clients share a counter in this process: core NATS has no flow control, and a subscriber that falls too
    /// far behind is cut off as a slow consumer). What the transport alone costs.
    /// </summary>
    public static async Task<double> CorePublishGBps(NatsCluster cluster, long totalBytes, int messageBytes, TextWriter log)
    {
        int count = (int)(totalBytes / messageBytes);
        await using var producer = NatsBench.Connect(cluster, 0, "bench-core-producer");
        await using var subscriber = NatsBench.Connect(cluster, 1, "bench-core-subscriber");
        await using var sub = await subscriber.SubscribeCoreAsync<NatsMemoryOwner<byte>>("bench.core.>");
        await subscriber.PingAsync(); // the subscription is on node 1 ...
        await WaitForInterest(producer, "bench.core.probe", sub);
        byte[][] payloads = Payloads(messageBytes);
        using var done = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        int received = 0;
        var gate = new SemaphoreSlim(Window, Window);
        var consume = Task.Run(async () =>
        {
            await foreach (var msg in sub.Msgs.ReadAllAsync(done.Token))
            {
                using NatsMemoryOwner<byte> data = msg.Data;
                if (msg.Subject == "bench.core.probe")
                {
                    continue;
                }

                int block = BinaryPrimitives.ReadInt32LittleEndian(data.Span);
                if (data.Length != messageBytes || block != received)
                {
                    throw new InvalidOperationException($"message {received}: block {block}, {data.Length} bytes");
                }

                gate.Release();
                if (++received == count)
                {
                    return;
                }
            }
        });

        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
        {
            await gate.WaitAsync(done.Token);
            byte[] payload = payloads[i % Window]; // message i - Window has been received
            BinaryPrimitives.WriteInt32LittleEndian(payload, i);
            await producer.PublishAsync($"bench.core.{i}", payload, cancellationToken: done.Token);
        }

        await consume.WaitAsync(done.Token);
        double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        log.WriteLine($"  core: {count} x {messageBytes} B in {seconds:F2} s");
        return totalBytes / seconds / 1e9;
    }

    /// <summary>
    /// Milliseconds of <paramref name="rounds"/> request-reply round trips of a <paramref name="requestBytes"/>
    /// request and an empty reply, from a client on node <paramref name="requesterNode"/> to a responder on node
    /// <paramref name="responderNode"/>, one at a time; the first tenth are dropped (warm-up). Sorted ascending.
    /// </summary>
    public static async Task<double[]> RequestReplyMs(NatsCluster cluster, int requesterNode, int responderNode, int requestBytes, int rounds)
    {
        await using var requester = NatsBench.Connect(cluster, requesterNode, "bench-requester");
        await using var responder = NatsBench.Connect(cluster, responderNode, "bench-responder");
        string subject = $"bench.rr.{Guid.NewGuid():N}";
        await using var sub = await responder.SubscribeCoreAsync<NatsMemoryOwner<byte>>(subject);
        using var stop = new CancellationTokenSource();
        var serve = Task.Run(async () =>
        {
            await foreach (var msg in sub.Msgs.ReadAllAsync(stop.Token))
            {
                msg.Data.Dispose();
                await msg.ReplyAsync(ReadOnlyMemory<byte>.Empty, cancellationToken: stop.Token);
            }
        });

        byte[] request = new byte[requestBytes];
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            // Interest crosses the route asynchronously: until node 0 knows of the subscription, there are no responders.
            try
            {
                await requester.RequestAsync<byte[], NatsMemoryOwner<byte>>(subject, request);
                break;
            }
            catch (NatsNoRespondersException) when (deadline.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(10);
            }
        }

        int warm = rounds / 10;
        var ms = new List<double>(rounds);
        for (int i = 0; i < rounds + warm; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            var reply = await requester.RequestAsync<byte[], NatsMemoryOwner<byte>>(subject, request);
            double elapsed = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            reply.Data.Dispose();
            if (i >= warm)
            {
                ms.Add(elapsed);
            }
        }

        await stop.CancelAsync();
        try
        {
            await serve;
        }
        catch (OperationCanceledException)
        {
            // stopped
        }

        ms.Sort();
        return [.. ms];
    }

    /// <summary>The <paramref name="p"/>-th percentile (0-100) of sorted <paramref name="sorted"/>, nearest rank.</summary>
    public static double Percentile(double[] sorted, double p) =>
        sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static byte[][] Payloads(int messageBytes)
    {
        var random = new Random(18);
        var payloads = new byte[Window][];
        for (int i = 0; i < Window; i++)
        {
            payloads[i] = new byte[messageBytes];
            random.NextBytes(payloads[i]);
        }

        return payloads;
    }

    private static async Task WaitForInterest(NatsConnection producer, string probeSubject, INatsSub<NatsMemoryOwner<byte>> sub)
    {
        // A subscription made on node 1 reaches node 0 over the route asynchronously; core publishes before that are
        // dropped. Publish probes until one arrives.
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            await producer.PublishAsync(probeSubject, new byte[1]);
            using var wait = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
            try
            {
                var msg = await sub.Msgs.ReadAsync(wait.Token);
                msg.Data.Dispose();
                while (sub.Msgs.TryRead(out var more))
                {
                    more.Data.Dispose();
                }

                return;
            }
            catch (OperationCanceledException)
            {
                // not yet
            }
        }

        throw new TimeoutException("the subscription on node 1 did not reach node 0 within 30 s");
    }
}

/// <summary><c>jetstream-publish-1gib</c>: the baseline of <c>replicate-1gib</c>, against core NATS.</summary>
internal sealed class JetStreamPublish1GiB : IScenario
{
    private const int MessageBytes = 1 << 20; // 1 MiB, one block

    public string Name => "jetstream-publish-1gib";

    public string Description => "GB/s of 1 GiB in 1 MiB messages published to a replicas=3 stream (max 1 msg per subject) and consumed by another client, vs core NATS pub/sub across the same route";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        long total = context.Scale >= 1 ? 1L << 30 : Math.Max(64L << 20, (long)((1L << 30) * context.Scale) / MessageBytes * MessageBytes);
        using var cluster = NatsBench.StartCluster(context);
        var js = new List<double>();
        var core = new List<double>();
        // Three rounds, the sides alternating (A B, B A, A B); the median of each.
        for (int round = 0; round < 3; round++)
        {
            for (int side = 0; side < 2; side++)
            {
                bool jetStream = (side == 0) == (round % 2 == 0);
                double gbps = NatsBench.Run(() => jetStream
                    ? NatsBaselines.JetStreamPublishGBps(cluster, total, MessageBytes, context.Log)
                    : NatsBaselines.CorePublishGBps(cluster, total, MessageBytes, context.Log));
                (jetStream ? js : core).Add(gbps);
                context.Log.WriteLine($"  round {round}: {(jetStream ? "jetstream" : "core")} {gbps:F3} GB/s");
            }
        }

        return [new BenchResult(Name, "median", "GB/s", Median(js), "nats-core-pubsub-1gib", Median(core))];
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}

/// <summary><c>nats-request-reply</c>: the baseline of <c>replica-lag</c>, across nodes, against the same on one node.</summary>
internal sealed class NatsRequestReply : IScenario
{
    private const int RequestBytes = 4 << 10; // 4 KiB, the write replica-lag measures

    public string Name => "nats-request-reply";

    public string Description => "p50/p99 ms of a 4 KiB request-reply round trip from a client on node 0 to a responder on node 1, vs both on node 0";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        int rounds = Math.Max(200, (int)(2000 * context.Scale));
        using var cluster = NatsBench.StartCluster(context);
        double[] across = NatsBench.Run(() => NatsBaselines.RequestReplyMs(cluster, 0, 1, RequestBytes, rounds));
        double[] same = NatsBench.Run(() => NatsBaselines.RequestReplyMs(cluster, 0, 0, RequestBytes, rounds));
        context.Log.WriteLine($"  across nodes: p10 {NatsBaselines.Percentile(across, 10):F3} p50 {NatsBaselines.Percentile(across, 50):F3} p90 {NatsBaselines.Percentile(across, 90):F3} p99 {NatsBaselines.Percentile(across, 99):F3} max {across[^1]:F3} ms");
        context.Log.WriteLine($"  same node:    p10 {NatsBaselines.Percentile(same, 10):F3} p50 {NatsBaselines.Percentile(same, 50):F3} p90 {NatsBaselines.Percentile(same, 90):F3} p99 {NatsBaselines.Percentile(same, 99):F3} max {same[^1]:F3} ms");
        return
        [
            new BenchResult(Name, "p50", "ms", NatsBaselines.Percentile(across, 50), "nats-request-reply-same-node", NatsBaselines.Percentile(same, 50)),
            new BenchResult(Name, "p99", "ms", NatsBaselines.Percentile(across, 99), "nats-request-reply-same-node", NatsBaselines.Percentile(same, 99)),
        ];
    }
}
