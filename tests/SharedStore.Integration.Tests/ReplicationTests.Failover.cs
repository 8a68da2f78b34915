using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using SharedStore.Broker;

namespace SharedStore.Integration.Tests;

/// <summary>Owner failover (issue 18 part 3, docs/ARCHITECTURE.md §14 "Failover"): kill -9 of the owner broker, a
/// takeover by another broker, verification against the last flush, the new owner's writes on a replica, and the old
/// owner's host refused when it comes back.</summary>
public sealed partial class ReplicationTests
{
    private const int FailoverBlocks = 16;
    private const int FailoverBlock = 4096;

    /// <summary>Fills every block with words of (stamp &lt;&lt; 8 | block): a block of one write is one stamp throughout.</summary>
    private static byte[] Stamped(int stamp)
    {
        var data = new byte[FailoverBlocks * FailoverBlock];
        for (int b = 0; b < FailoverBlocks; b++)
        {
            for (int w = 0; w < FailoverBlock; w += 4)
            {
                BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan((b * FailoverBlock) + w), (stamp << 8) | b);
            }
        }

        return data;
    }

    /// <summary>The stamp of every block, failing on a block that mixes stamps (torn) or names another block.</summary>
    private static int[] Stamps(SharedObject o)
    {
        using var lease = o.Get(0, o.Size, Wait);
        Assert.That(lease.Torn, Is.False);
        var stamps = new int[FailoverBlocks];
        for (int b = 0; b < FailoverBlocks; b++)
        {
            var block = lease.Span.Slice(b * FailoverBlock, FailoverBlock);
            int first = BinaryPrimitives.ReadInt32LittleEndian(block);
            for (int w = 0; w < FailoverBlock; w += 4)
            {
                int word = BinaryPrimitives.ReadInt32LittleEndian(block[w..]);
                if (word != first)
                {
                    Assert.Fail($"block {b}: word {w / 4} is {word:x}, the block's first is {first:x}: a mixture of two versions");
                }
            }

            Assert.That(first & 0xFF, Is.EqualTo(b), $"block {b} holds another block's bytes");
            stamps[b] = first >> 8;
        }

        return stamps;
    }

    private static ContainerOptions TakeOver() => new() { Replication = new ReplicationOptions { TakeOver = true } };

    [Test]
    public void AfterKill9OfTheOwner_ANewBrokerTakesOver_WithEveryFlushedBlock_ItsWritesReachAReplica_AndTheOldHostIsRefused()
    {
        // Contract (part 3): once the owner broker is killed, another broker's TakeOver (after 1.5 lease times without
        // a heartbeat) has every block flushed before the kill, and each unflushed one at the flushed or the unflushed
        // version, whole; its clients write, and a replica that followed the old owner follows the new one (a new,
        // higher epoch); a takeover while the owner is alive, and a plain owner create on the old owner's restarted
        // host, are refused (AlreadyExists); that host can join as a replica and sees the new owner's writes.
        var ob = StartBroker("--nats", Cluster.Urls, "--replication-lease-ms", "1000");
        var nb = StartBroker("--nats", Cluster.Urls, "--replication-lease-ms", "1000");
        var rb = StartBroker("--nats", Cluster.Urls);
        string name = NewName("failover");
        int[] after;
        long killedAt;
        long v4;
        using (var owner = Connect(ob))
        {
            var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, Owner(FailoverBlock));
            var oo = oc.CreateObject("o", FailoverBlocks * FailoverBlock);
            oo.Write(0, Stamped(1));
            oo.Write(0, Stamped(2));
            oc.Flush(Wait); // the last flush: every block at stamp 2
            long flushed = oo.Version;

            using var replica = Connect(rb);
            var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, Replica());
            var ro = rc.WaitForObject("o", Wait);
            ro.WaitForVersion(flushed, Wait);
            Assert.That(Stamps(ro), Is.All.EqualTo(2));

            for (int b = 0; b < FailoverBlocks; b += 2)
            {
                oo.Write(b * (long)FailoverBlock, Stamped(3).AsSpan(b * FailoverBlock, FailoverBlock)); // never flushed
            }

            ob.Kill();
            killedAt = Stopwatch.GetTimestamp();
            Assert.That(Stamps(ro), Is.All.InRange(2, 3), "the replica, owner dead: whole blocks, none older than the flush");

            using var next = Connect(nb);
            var sw = Stopwatch.StartNew();
            Assert.That(Metric(next, BrokerMetrics.ReplicationFailoversName), Is.EqualTo(0));
            var nc = next.CreateContainer(name, SharedStoreClient.ProcessGroupId, TakeOver());
            double tookMs = sw.Elapsed.TotalMilliseconds;
            Assert.That(Metric(next, BrokerMetrics.ReplicationFailoversName), Is.EqualTo(1), "the takeover is counted (sharedstore.broker.replication.failovers)");
            Assert.That(nc.IsReplica, Is.False);
            Assert.That(nc.CanWrite, Is.True);
            Assert.That(nc.BlockSize, Is.EqualTo(FailoverBlock), "the catalog's block size");
            var no = nc.JoinObject("o");
            after = Stamps(no);
            for (int b = 0; b < FailoverBlocks; b++)
            {
                Assert.That(after[b], b % 2 == 0 ? Is.InRange(2, 3) : Is.EqualTo(2), $"block {b}: every flushed write, an unflushed one whole or not at all");
            }

            Assert.That(no.Version, Is.GreaterThanOrEqualTo(flushed), "the new owner's versions go on above the flushed one");
            no.Write(0, Stamped(4));
            double acceptedMs = Stopwatch.GetElapsedTime(killedAt).TotalMilliseconds;
            nc.Flush(Wait);
            v4 = no.Version;
            Assert.That(v4, Is.GreaterThan(flushed));
            ro.WaitForVersion(v4, Wait);
            Assert.That(Stamps(ro), Is.All.EqualTo(4), "the replica applies the new owner's epoch");
            TestContext.Progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"failover, lease 1000 ms: takeover call {tookMs:0} ms, kill -9 to the new owner's first write {acceptedMs:0} ms; unflushed blocks kept {after.Count(s => s == 3)} of {FailoverBlocks / 2}"));
        }

        // The old owner's host comes back with the same socket and state folder: it may not own the container again
        // (the lease is held by the new owner, alive), neither by a create nor by a takeover, but it can follow it.
        var back = Track(BrokerProcess.StartOn(ob.Directory, true, "--nats", Cluster.Urls, "--replication-lease-ms", "1000"));
        using var again = Connect(back);
        var e = Assert.Throws<SharedStoreException>(() => again.CreateContainer(name, SharedStoreClient.ProcessGroupId, Owner(FailoverBlock)))!;
        Assert.That(e.Code, Is.EqualTo(ErrorCode.AlreadyExists), e.Message);
        e = Assert.Throws<SharedStoreException>(() => again.CreateContainer(name, SharedStoreClient.ProcessGroupId, TakeOver()))!;
        Assert.That(e.Code, Is.EqualTo(ErrorCode.AlreadyExists), e.Message);
        Assert.That(e.Message, Does.Contain("live broker"));
        var bc = again.CreateContainer(name, SharedStoreClient.ProcessGroupId, Replica());
        var bo = bc.WaitForObject("o", Wait);
        bo.WaitForVersion(v4, Wait);
        Assert.That(Stamps(bo), Is.All.EqualTo(4), "the old host, as a replica, has the new owner's writes");
    }
}
