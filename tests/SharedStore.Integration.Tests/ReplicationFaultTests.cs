using System.Diagnostics;
using SharedStore.Cli.Tests.Harness;
using SharedStore.Tests.Nats;

namespace SharedStore.Integration.Tests;

/// <summary>
/// Replication through NATS faults (issue 18 part 4): kill -9 of one NATS node during replication, and a network
/// partition of the owner's NATS node from the cluster, then healed. A cluster of its own (the faults would disturb
/// <see cref="ReplicationTests"/>' cluster), with every route through the fixture's relays so that a node can be cut
/// off; the owner broker talks to node 0 and the replica broker to node 1, as brokers on two hosts talk to the server
/// on their own host. During each test a reader on the replica checks every block for a whole stamp
/// (<see cref="ReplicationTests.Stamp"/>) that never goes back.
/// </summary>
public sealed class ReplicationFaultTests : NatsClusterTest
{
    private const int BlockSize = 64 << 10;
    private const int Blocks = 32;

    /// <summary>Every route through the fixture's relays, so that a node can be cut off.</summary>
    private protected override NatsClusterOptions ClusterOptions => new() { PartitionableRoutes = true };

    [Test]
    public void KillingOneNatsNodeDuringReplication_LosesNothing_AndReplicationGoesOn()
    {
        // Contract: with an R3 stream, the loss of one of three nodes (kill -9, here the one neither broker talks to)
        // loses no acknowledged block and does not stop replication: writes made after the kill are flushed (a flush
        // that fails while the stream elects a new leader is IoError and its blocks stay dirty, so a later flush
        // succeeds), and the replica ends with every block at the owner's last stamp, never torn or going back.
        using var rig = new Rig(this, Cluster);
        rig.WriteFor(TimeSpan.FromSeconds(1.5));
        rig.FlushUntilDone(Wait);
        int pid = Cluster.Pid(2);
        Cluster.Kill(2);
        Assert.That(Cluster.IsServing(2), Is.False, $"nats node 2 (pid {pid}) is dead");
        try
        {
            rig.WriteFor(TimeSpan.FromSeconds(3));
            int failed = rig.FlushUntilDone(Wait);
            TestContext.Progress.WriteLine($"node kill: {failed} flush(es) failed before one succeeded with node 2 dead");
            rig.CheckReplicaCaughtUp();
        }
        finally
        {
            Cluster.Restart(2);
            Cluster.WaitReady();
        }

        rig.WriteFor(TimeSpan.FromSeconds(1));
        rig.FlushUntilDone(Wait);
        rig.CheckReplicaCaughtUp();
    }

    [Test]
    public void APartitionOfTheOwnersNatsNode_FailsItsFlush_AndAfterTheHealTheReplicaCatchesUp()
    {
        // Contract (docs/ARCHITECTURE.md §14, Flush): with the owner's node cut off from the other two, its publishes
        // reach no stream quorum, so a Flush fails (IoError when a publish times out, Timeout when the call's own
        // timeout comes first) and its blocks stay dirty; the partition is shorter than the lease (30 s here), so
        // the owner keeps it. After the heal the owner's passes resend them: a Flush succeeds and the replica reaches the
        // owner's last stamp of every block, its reader never seeing a torn or older block.
        using var rig = new Rig(this, Cluster);
        rig.WriteFor(TimeSpan.FromSeconds(1));
        rig.FlushUntilDone(Wait);
        Cluster.Partition(0);
        try
        {
            rig.WriteFor(TimeSpan.FromSeconds(0.5));
            var sw = Stopwatch.StartNew();
            var e = Assert.Throws<SharedStoreException>(() => rig.Owner.Flush(TimeSpan.FromSeconds(3)))!;
            TestContext.Progress.WriteLine($"partition: flush failed after {sw.ElapsedMilliseconds} ms: {e.Code} {e.Message}");
            Assert.That(e.Code, Is.AnyOf(ErrorCode.IoError, ErrorCode.Timeout), e.Message);
        }
        finally
        {
            Cluster.Heal(0);
        }

        Cluster.WaitReady();
        rig.WriteFor(TimeSpan.FromSeconds(0.5));
        int failed = rig.FlushUntilDone(Wait);
        TestContext.Progress.WriteLine($"partition: {failed} flush(es) failed after the heal before one succeeded");
        rig.CheckReplicaCaughtUp();
    }

    [Test]
    public void Ls_ShowsEachReplicatedContainersRole_LagAndStream()
    {
        // Contract (part 6): `sharedstore ls` shows, per container, the role ("owner" on the owner's broker, "replica"
        // on the replica's, "-" for one that is not replicated), a replica's lag in ms ("-" for the owner) and the
        // stream ("SHAREDSTORE" by default); the listing's ReplicationLagMs is the replica follower's LagMs.
        var ob = StartBroker("--nats", Cluster.Url(0));
        var rb = StartBroker("--nats", Cluster.Url(1));
        using var owner = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = ob.SocketPath });
        using var replica = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = rb.SocketPath });
        string name = $"ls-{Guid.NewGuid():N}"[..12];
        var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions { BlockSize = 4096, Replication = new ReplicationOptions() });
        var oo = oc.CreateObject("o", 4096);
        owner.CreateContainer("plain", SharedStoreClient.ProcessGroupId);
        var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions { Replication = new ReplicationOptions { Replica = true } });
        var ro = rc.WaitForObject("o", Wait);
        oo.Write(0, new byte[] { 1 });
        oc.Flush(Wait);
        ro.WaitForVersion(oo.Version, Wait);

        var listing = replica.ListContainers().Single(c => c.Name == name);
        Assert.That(listing.Replication, Is.Not.Null);
        Assert.That(listing.Replication!.Replica, Is.True);
        Assert.That(listing.ReplicationLagMs, Is.GreaterThan(0), "the replica applied a message, so it measured a lag");

        var o = CliRunner.Run(ob.SocketPath, "ls");
        Assert.That(o.ExitCode, Is.EqualTo(0), o.ToString());
        string[] ownerRow = Cells(o.Stdout, name);
        Assert.That(ownerRow, Does.Contain("owner").And.Contain("SHAREDSTORE"), o.Stdout);
        Assert.That(ownerRow, Does.Not.Contain("replica"));
        string[] plainRow = Cells(o.Stdout, "plain");
        Assert.That(plainRow, Does.Not.Contain("owner").And.Not.Contain("SHAREDSTORE"), o.Stdout);

        var r = CliRunner.Run(rb.SocketPath, "ls");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string[] replicaRow = Cells(r.Stdout, name);
        Assert.That(replicaRow, Does.Contain("replica").And.Contain("SHAREDSTORE"), r.Stdout);
        Assert.That(replicaRow.Any(c => c.EndsWith(" ms", StringComparison.Ordinal)), Is.True, r.Stdout);
    }

    private static string[] Cells(string text, string containing) =>
        (text.Split('\n').FirstOrDefault(l => l.Contains(containing, StringComparison.Ordinal))
            ?? throw new AssertionException($"no line contains '{containing}':\n{text}")).Split('│', StringSplitOptions.TrimEntries);

    /// <summary>An owner broker on node 0 and a replica broker on node 1 with one container of
    /// <see cref="Blocks"/> stamped blocks, and a reader on the replica running until disposed.</summary>
    private sealed class Rig : IDisposable
    {
        private readonly SharedStoreClient _ownerClient;
        private readonly SharedStoreClient _replicaClient;
        private readonly SharedObject _oo;
        private readonly SharedObject _ro;
        private readonly long[] _last = new long[Blocks];
        private readonly long[] _seen = new long[Blocks];
        private readonly CancellationTokenSource _done = new();
        private readonly Task _reader;
        private readonly byte[] _buffer = new byte[BlockSize];
        private readonly Random _rnd = new(18);
        private long _stamp;
        private long _reads;
        private readonly BrokerProcess _ob;
        private readonly BrokerProcess _rb;
        private string? _failure;

        public Rig(CrossProcessTest test, NatsCluster cluster)
        {
            // A 30 s lease: the partition (about 3.5 s) and the cluster's recovery after the heal must stay well inside
            // it, and at load 10+ the key-value quorum took over 10 s to answer again once (the owner fenced itself).
            var ob = test.StartBroker("--nats", cluster.Url(0), "--replication-lease-ms", "30000");
            var rb = test.StartBroker("--nats", cluster.Url(1), "--replication-lease-ms", "30000");
            (_ob, _rb) = (ob, rb);
            _ownerClient = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = ob.SocketPath });
            _replicaClient = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = rb.SocketPath });
            string name = $"fault-{Guid.NewGuid():N}";
            Owner = _ownerClient.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions
            {
                BlockSize = BlockSize,
                Replication = new ReplicationOptions { StreamReplicas = 3 },
            });
            _oo = Owner.CreateObject("o", (long)BlockSize * Blocks);
            var rc = _replicaClient.CreateContainer(name, SharedStoreClient.ProcessGroupId, new ContainerOptions { Replication = new ReplicationOptions { Replica = true } });
            _ro = rc.WaitForObject("o", Wait);
            _reader = Task.Run(Read);
        }

        public Container Owner { get; }

        /// <summary>Rewrites random blocks with new stamps for <paramref name="time"/>.</summary>
        public void WriteFor(TimeSpan time)
        {
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < time)
            {
                int b = _rnd.Next(Blocks);
                long stamp = ++_stamp;
                ReplicationTests.Fill(_buffer, b, stamp);
                _oo.Write((long)b * BlockSize, _buffer);
                _last[b] = stamp;
                Thread.Sleep(1); // a steady stream of writes, not a burst the pass coalesces into one
            }

            Assert.That(_failure, Is.Null);
        }

        /// <summary>Flushes until a flush succeeds or <paramref name="timeout"/> passes; returns the failed ones
        /// (IoError: a publish failed or timed out while the stream was unavailable).</summary>
        public int FlushUntilDone(TimeSpan timeout)
        {
            var sw = Stopwatch.StartNew();
            int failed = 0;
            while (true)
            {
                try
                {
                    Owner.Flush(timeout - sw.Elapsed);
                    return failed;
                }
                catch (SharedStoreException e) when (e.Code is ErrorCode.IoError or ErrorCode.Timeout)
                {
                    failed++;
                    TestContext.Progress.WriteLine($"  flush failed at {sw.ElapsedMilliseconds} ms: {e.Code} {e.Message}");
                    if (sw.Elapsed >= timeout)
                    {
                        throw new AssertionException($"no flush succeeded within {timeout}: {e.Code} {e.Message}\n{BrokerLogs()}", e);
                    }
                }
            }
        }

        /// <summary>After a successful flush: the replica reaches the owner's version and every block holds the
        /// owner's last stamp; the reader saw nothing torn or going back.</summary>
        public void CheckReplicaCaughtUp()
        {
            try
            {
                _ro.WaitForVersion(_oo.Version, Wait);
            }
            catch (SharedStoreException e)
            {
                throw new AssertionException($"the replica did not catch up: {e.Message}\n{BrokerLogs()}", e);
            }
            for (int b = 0; b < Blocks; b++)
            {
                using var lease = _ro.Get((long)b * BlockSize, BlockSize, Wait);
                Assert.That(ReplicationTests.Stamp(lease.Span, b, out string? torn), Is.EqualTo(_last[b]), $"block {b} ends at the owner's last write ({torn})");
            }

            Assert.That(_failure, Is.Null);
            Assert.That(Interlocked.Read(ref _reads), Is.GreaterThan(Blocks), "the reader ran");
        }

        /// <summary>The last lines each broker wrote to stderr, for a failure's message.</summary>
        public string BrokerLogs() =>
            $"owner broker stderr:\n{Tail(_ob.Stderr)}\nreplica broker stderr:\n{Tail(_rb.Stderr)}";

        private static string Tail(string text) => string.Join('\n', text.Split('\n').TakeLast(40));

        public void Dispose()
        {
            _done.Cancel();
            bool stopped = _reader.Wait(Wait);
            _ownerClient.Dispose();
            _replicaClient.Dispose();
            _done.Dispose();
            Assert.That(stopped, Is.True, "the reader stopped");
            Assert.That(_failure, Is.Null);
        }

        private void Read()
        {
            while (!_done.IsCancellationRequested && _failure is null)
            {
                for (int b = 0; b < Blocks && _failure is null; b++)
                {
                    using var lease = _ro.Get((long)b * BlockSize, BlockSize, Wait);
                    long stamp = ReplicationTests.Stamp(lease.Span, b, out string? torn);
                    if (torn is not null)
                    {
                        _failure = $"block {b}: {torn}";
                    }
                    else if (stamp < _seen[b])
                    {
                        _failure = $"block {b} went back from stamp {_seen[b]} to {stamp}";
                    }

                    _seen[b] = Math.Max(_seen[b], stamp);
                    Interlocked.Increment(ref _reads);
                }
            }
        }
    }
}
