using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace SharedStore.CrashSafety.Tests;

/// <summary>
/// Durable containers under kill -9 of the broker (issue 6, item 5): this test process writes versioned whole blocks
/// into a durable object and flushes at random moments while the broker writes back in the background; the broker is
/// killed at a random moment, restarted on the same state directory, and every block is checked; one round in eight
/// starts by destroying the object and creating it anew, so first write-backs are killed too. Rounds: 200, or
/// SHAREDSTORE_DURABLE_ROUNDS (10 000 for the long mode).
/// </summary>
/// <remarks>
/// Why here and not in SharedStore.Integration.Tests: this is a randomized many-round crash loop with a long mode,
/// like <see cref="TortureTests"/>, and it needs no TestClient child (the writer is this process, so it knows exactly
/// which flushes returned before the kill). The single-scenario durable tests (disk full, corrupt files,
/// permissions) are in the integration project, beside the smoke test.
/// <para>What a kill -9 can show: the killed broker's page cache survives it, so a skipped fdatasync (a power-loss
/// property) passes here; and a kill never tore a slot write in practice, so half the brokers run with the
/// write-back tear window of DurableStore.TestHooks.cs. Seen failing when the product was broken on purpose: a
/// slot written in place (blocks torn), a flush returning before its write-back (a block older than flushed),
/// restore preferring the lower generation, restore skipping the data checksum (both: older than flushed).</para>
/// </remarks>
[TestFixture]
[Category("CrossProcess")]
[Category("Torture")]
[Category("Durable")]
[Budget(900)] // rounds of kill -9 and restore: about 2 min on an idle machine, up to 5 on a machine shared with builds
public class DurableCrashTests
{
    private const int BlockSize = 1 << 16; // 64 KiB
    private const int Blocks = 16;          // a 1 MiB object: restarts and checks stay cheap
    private const int MaxBlocksPerWrite = 4;
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(15);
    private static readonly Dictionary<string, string> s_tearWindowEnv = new(StringComparer.Ordinal) { ["SHAREDSTORE_TEST_TEAR_WINDOW_MS"] = "5" };
    private static readonly Regex s_restoreLine = new(@"restored durable object '[^']*': (\d+) block\(s\), (\d+) torn slot\(s\) skipped, (\d+) corrupt block", RegexOptions.CultureInvariant);

    [Test]
    public void KillBrokerDuringWriteBack_Restart_EveryBlockIsAWholeVersionNoOlderThanItsLastFlush()
    {
        // Contract (issue 6, "broker restart, clean or by kill -9"): after a kill -9 at any moment of write-back and a
        // restart, every block of a durable object holds one complete version that some write wrote (never a mix of
        // two, never bytes nobody wrote), no older than the last version a successful flush covered before the kill,
        // and no newer than the last one written; no block is reported torn (only a client dying mid-write tears a
        // block in memory, and the shadow slots keep a valid copy of every block on disk). Once a restart served a
        // version it is on disk, so it becomes that block's floor for the next round too.
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("SHAREDSTORE_DURABLE_ROUNDS"), out int r) ? r : 200;
        int seed = Environment.TickCount;
        TestContext.Out.WriteLine($"rounds {rounds}, seed {seed}");
        var rnd = new Random(seed);
        string dir = BrokerProcess.NewDirectory();
        string store = Path.Combine(dir, "store");
        Directory.CreateDirectory(store);

        var written = new long[Blocks]; // the last version written or submitted (never reused across rounds)
        var floor = new long[Blocks];   // the last version flushed before a kill, or served after a restart
        var fresh = new long[Blocks];   // the last version written before the object was last created anew
        var stats = new Stats();
        var total = Stopwatch.StartNew();
        int round = 0;
        BrokerProcess? broker = null;
        try
        {
            for (round = 0; round < rounds; round++)
            {
                // Half the brokers open a tear window in write-back (DurableStore.TestHooks.cs): a kill inside it leaves
                // the slots being written torn, which a plain kill -9 never does (io_uring finishes the writes).
                bool tearWindow = rnd.Next(2) == 0;
                broker = BrokerProcess.StartOn(dir, waitReady: true, tearWindow ? s_tearWindowEnv : null);
                var options = new SharedStoreClientOptions { SocketPath = broker.SocketPath, AsyncSubmitTimeout = s_bound, RequestTimeout = s_bound };
                using (var client = SharedStoreClient.Connect(options))
                {
                    Container con;
                    SharedObject obj;
                    if (round == 0)
                    {
                        con = client.CreateContainer("dur", SharedStoreClient.ProcessGroupId, new ContainerOptions { BlockSize = BlockSize, DurablePath = store });
                        obj = con.CreateObject("o", (long)Blocks * BlockSize);
                    }
                    else
                    {
                        con = client.JoinContainer("dur");
                        obj = con.JoinObject("o");
                        Verify(obj, floor, written, fresh, round, stats);
                        if (rnd.Next(8) == 0)
                        {
                            // A new object now and then: its blocks' first write-backs (slot 1 still empty) are then
                            // in reach of the kill, not only in round 0 (a torn first write-back was once restored as
                            // a corrupt block instead of the object's initial zeros).
                            obj.Destroy(s_bound);
                            obj = con.CreateObject("o", (long)Blocks * BlockSize);
                            Array.Copy(written, fresh, Blocks);
                            Array.Clear(floor);
                            stats.Recreated++;
                        }
                    }

                    // Write and flush; kill -9 the broker at a random moment of it (write-back runs every 50 ms and on
                    // every flush; the restore log of the next broker says how many kills tore a slot).
                    var writer = new Writer(obj, con, written, rnd.Next());
                    var thread = new Thread(writer.Run) { IsBackground = true, Name = "durable-writer" };
                    thread.Start();
                    Thread.Sleep(rnd.Next(5, 60));
                    if (rnd.Next(2) == 0)
                    {
                        // Aimed at a flush's write-back pass: right after the writer asks for one, a random 0–1.5 ms
                        // later (a pass over a few dirty 64 KiB blocks takes about that long), or 0–8 ms with the
                        // 5 ms tear window.
                        int flushes = writer.FlushesStarted;
                        var wait = Stopwatch.StartNew();
                        while (writer.FlushesStarted == flushes && wait.Elapsed < s_bound && thread.IsAlive)
                        {
                            Thread.SpinWait(20);
                        }

                        long until = Stopwatch.GetTimestamp() + (Stopwatch.Frequency * rnd.Next(tearWindow ? 8000 : 1500) / 1_000_000);
                        while (Stopwatch.GetTimestamp() < until)
                        {
                            Thread.SpinWait(20);
                        }
                    }
                    else
                    {
                        Thread.Sleep(rnd.Next(60)); // any moment
                    }

                    broker.Kill();
                    writer.Stop();
                    Assert.That(thread.Join(s_bound), Is.True, $"round {round}: the writer did not stop within {s_bound} of the kill");
                    Assert.That(writer.Failure, Is.Null, $"round {round}: the writer failed before the kill");
                    for (int b = 0; b < Blocks; b++)
                    {
                        floor[b] = Math.Max(floor[b], writer.Flushed[b]);
                    }

                    stats.Flushes += writer.Flushes;
                    stats.Writes += writer.Writes;
                    stats.KilledInFlush += writer.KilledInFlush ? 1 : 0;
                }

                CountRestoreLog(broker.Stderr, stats);
                broker.Dispose();
                broker = null;
            }

            // The last kill: one more restart must serve what the last round flushed.
            broker = BrokerProcess.StartOn(dir, waitReady: true);
            using (var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath }))
            {
                Verify(client.JoinContainer("dur").JoinObject("o"), floor, written, fresh, rounds, stats);
            }

            CountRestoreLog(broker.Stderr, stats);
            TestContext.Out.WriteLine(
                $"{rounds} rounds in {total.Elapsed.TotalSeconds:F1} s: {stats.Writes} writes, {stats.Flushes} flushes, {stats.KilledInFlush} kills during a flush; " +
                $"objects created anew: {stats.Recreated}; restores: {stats.Restores}, slots torn by a kill (skipped): {stats.TornSlots} in {stats.RoundsWithTornSlots} restarts; " +
                $"blocks served at their flushed version: {stats.AtFloor}, newer (unflushed writes that made it): {stats.AboveFloor}; torn blocks: {stats.TornBlocks}");
            Assert.That(stats.Restores, Is.EqualTo(rounds), "every restart logged the restore of the object");
            if (rounds >= 100)
            {
                // About one restart in five finds torn slots (measured: 11 of 40, 13 of 60); none in 100 rounds means
                // the kills stopped landing inside write-back and this test no longer tests the fallback.
                Assert.That(stats.RoundsWithTornSlots, Is.GreaterThan(0), "no kill tore a slot: the fallback to the older shadow slot went untested");
            }
        }
        catch (Exception)
        {
            TestContext.Out.WriteLine($"failed in round {round}; broker stderr:\n{broker?.Stderr}");
            throw;
        }
        finally
        {
            broker?.Dispose();
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Checks every block against the versions (see the test's contract) and raises the floor to what was served.</summary>
    private static void Verify(SharedObject obj, long[] floor, long[] written, long[] fresh, int round, Stats stats)
    {
        var scratch = new byte[BlockSize];
        for (int b = 0; b < Blocks; b++)
        {
            using var lease = obj.Get((long)b * BlockSize, BlockSize, s_bound);
            long v = VersionedBlock.Decode(lease.ReadOnlySpan, b, scratch);
            stats.TornBlocks += lease.Torn ? 1 : 0;
            Assert.That(lease.Torn, Is.False, $"round {round}: block {b} is reported torn after a kill -9 of the broker (a flushed copy was lost)");
            Assert.That(v, Is.GreaterThanOrEqualTo(0), $"round {round}: block {b} is not a complete version of block {b} (a mix of two writes, or bytes nobody wrote)");
            Assert.That(v, Is.GreaterThanOrEqualTo(floor[b]), $"round {round}: block {b} came back at version {v}, older than version {floor[b]} that was flushed (or served) before");
            Assert.That(v, Is.LessThanOrEqualTo(written[b]), $"round {round}: block {b} came back at version {v}, which was never written (last: {written[b]})");
            Assert.That(v == 0 || v > fresh[b], Is.True, $"round {round}: block {b} came back at version {v}, written to the object destroyed before this one was created (up to {fresh[b]})");
            stats.AtFloor += v == floor[b] ? 1 : 0;
            stats.AboveFloor += v > floor[b] ? 1 : 0;
            floor[b] = v;
        }
    }

    private static void CountRestoreLog(string stderr, Stats stats)
    {
        foreach (Match m in s_restoreLine.Matches(stderr))
        {
            long torn = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
            stats.Restores++;
            stats.TornSlots += torn;
            stats.RoundsWithTornSlots += torn > 0 ? 1 : 0;
        }
    }

    private sealed class Stats
    {
        public long Writes;
        public long Flushes;
        public int KilledInFlush;
        public int Restores;
        public long TornSlots;
        public int RoundsWithTornSlots;
        public long AtFloor;
        public long AboveFloor;
        public long TornBlocks;
        public int Recreated;
    }

    /// <summary>
    /// Writes runs of 1–4 whole blocks, each block a fresh version (a quarter of the runs asynchronously), and flushes
    /// after about one run in six. <see cref="Flushed"/> is what the last successful flush covered: the versions
    /// written (or submitted: flush waits for this process's own asynchronous writes) before it was called.
    /// </summary>
    private sealed class Writer(SharedObject obj, Container con, long[] written, int seed)
    {
        private readonly long[] _done = new long[Blocks];
        private readonly List<AsyncOperation> _pending = [];
        private volatile bool _stop;
        private int _flushesStarted;

        public long[] Flushed { get; } = new long[Blocks];

        public int Flushes { get; private set; }

        public int Writes { get; private set; }

        public bool KilledInFlush { get; private set; }

        public int FlushesStarted => Volatile.Read(ref _flushesStarted);

        public string? Failure { get; private set; }

        public void Stop() => _stop = true;

        public void Run()
        {
            var rnd = new Random(seed);
            var buffer = new byte[MaxBlocksPerWrite * BlockSize];
            bool inFlush = false;
            try
            {
                while (!_stop)
                {
                    int first = rnd.Next(Blocks);
                    int count = 1 + rnd.Next(Math.Min(MaxBlocksPerWrite, Blocks - first));
                    var data = buffer.AsSpan(0, count * BlockSize);
                    for (int i = 0; i < count; i++)
                    {
                        VersionedBlock.Fill(data.Slice(i * BlockSize, BlockSize), first + i, ++written[first + i]);
                    }

                    if (rnd.Next(4) == 0)
                    {
                        _pending.Add(obj.AWrite((long)first * BlockSize, data));
                    }
                    else
                    {
                        obj.Write((long)first * BlockSize, data, s_bound);
                    }

                    Writes++;
                    for (int i = 0; i < count; i++)
                    {
                        _done[first + i] = written[first + i];
                    }

                    if (rnd.Next(6) == 0)
                    {
                        var covered = (long[])_done.Clone();
                        var ops = _pending.ToList();
                        inFlush = true;
                        Interlocked.Increment(ref _flushesStarted);
                        con.Flush(s_bound);
                        inFlush = false;
                        foreach (var op in ops)
                        {
                            if (op.Status != AsyncStatus.Completed)
                            {
                                Failure = $"an asynchronous write submitted before a successful flush is {op.Status} ({op.Error})";
                                return;
                            }
                        }

                        _pending.Clear();
                        Array.Copy(covered, Flushed, Blocks);
                        Flushes++;
                    }
                }
            }
            catch (SharedStoreException e) when (_stop || e.Code == ErrorCode.BrokerUnavailable)
            {
                KilledInFlush = inFlush; // the kill (or the stop right after it) interrupted a write or a flush
            }
            catch (Exception e)
            {
                Failure = e.ToString();
            }
        }
    }
}

/// <summary>A block's content that names the block and a version: the torture tests' self-checking pattern
/// (<see cref="TortureWorker.BlockPattern"/>) with the block as its writer and the version as its sequence number.
/// Any valid version is recognised by regenerating it.</summary>
internal static class VersionedBlock
{
    public static void Fill(Span<byte> block, long b, long version) => TortureWorker.BlockPattern.Fill(block, checked((uint)b), checked((uint)version));

    /// <summary>The version the block holds: 0 when never written (all zero), -1 when it is not exactly one version
    /// of block <paramref name="b"/>.</summary>
    public static long Decode(ReadOnlySpan<byte> block, long b, Span<byte> scratch)
    {
        if (block.IndexOfAnyExcept((byte)0) < 0)
        {
            return 0;
        }

        uint version = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(block) != (uint)b || version == 0)
        {
            return -1;
        }

        Fill(scratch[..block.Length], b, version);
        return scratch[..block.Length].SequenceEqual(block) ? version : -1;
    }
}
