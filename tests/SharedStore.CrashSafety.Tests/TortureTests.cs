using System.Diagnostics;
using SharedStore.Regions;
using SharedStore.TortureWorker;

namespace SharedStore.CrashSafety.Tests;

/// <summary>
/// Kills a randomly chosen client at a random moment of a random operation (SIGKILL: no cleanup of its own), while
/// the other clients keep reading, writing, joining, creating and destroying. After every kill it checks: no lock
/// is held by a dead process, no member or use of a dead process is left, every live client made progress, and every
/// block holds a complete write or is marked torn. Rounds: 200, or SHAREDSTORE_TORTURE_ROUNDS (10 000 for the long mode).
/// </summary>
[TestFixture]
[Category("CrossProcess")]
[Category("Torture")]
[Budget(900)] // a timed torture run: about 1 min idle, longer on a loaded machine
public unsafe class TortureTests
{
    private const int BlockSize = 1 << 16; // 64 KiB
    private const int Blocks = 64;          // a 4 MiB object
    private const int Workers = 4;
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(15);

    [Test]
    public void Torture_KillRandomClientsAtRandomMoments_NothingHeldNothingLostEveryoneProgresses()
    {
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("SHAREDSTORE_TORTURE_ROUNDS"), out int r) ? r : 200;
        int seed = Environment.TickCount;
        TestContext.Out.WriteLine($"rounds {rounds}, seed {seed}");
        var rnd = new Random(seed);
        using var broker = BrokerProcess.Start();
        using var client = broker.Connect();
        var con = client.CreateContainer("torture", SharedStoreClient.ProcessGroupId, new ContainerOptions { BlockSize = BlockSize });
        var obj = con.CreateObject("T", (long)Blocks * BlockSize);
        var workers = new List<WorkerProcess>();
        var recoveryMs = new List<double>();
        int tornSeen = 0;
        int round = 0;
        try
        {
            for (int i = 0; i < Workers; i++)
            {
                workers.Add(new WorkerProcess(broker.SocketPath, "torture", "T", rnd.Next()));
            }

            WaitFor(() => workers.All(w => w.Ready || w.Failure is not null), "workers to start");
            for (round = 0; round < rounds; round++)
            {
                // Progress baseline of the workers that are up and running.
                var running = workers.Where(w => w.Ready).ToDictionary(w => w, w => w.Progress);
                var victim = running.Count > 0 ? running.Keys.ElementAt(rnd.Next(running.Count)) : workers[rnd.Next(workers.Count)];
                Thread.Sleep(rnd.Next(25)); // a random moment of whatever it is doing
                var sw = Stopwatch.StartNew();
                victim.Kill();
                workers.Remove(victim);
                workers.Add(new WorkerProcess(broker.SocketPath, "torture", "T", rnd.Next()));

                // 1. The broker notices (socket EOF) and drops the dead member.
                WaitFor(() => !client.ListRaw().Containers.Single(c => c.Info.Name == "torture").MemberPids.Contains(victim.Pid), $"round {round}: broker to drop dead pid {victim.Pid}");
                recoveryMs.Add(sw.Elapsed.TotalMilliseconds);

                // 2. No lock state names a slot that is not a live member. Read the records first and the member list
                // second: a replacement worker may join (and reuse the freed slot) at any moment, but nobody dies
                // during the check, so every slot seen holding at the first read is still a member at the second.
                var holders = SlotsInLockState(obj);
                var entry = client.ListRaw().Containers.Single(c => c.Info.Name == "torture");
                var liveSlots = new HashSet<int>(entry.MemberSlots.Select(s => (int)s));
                AssertNoDeadHolders(holders, liveSlots, round);

                // 3. Every block is a complete write (valid checksum) or marked torn.
                tornSeen += AssertBlocksIntact(obj, round);

                // 4. Every worker that was running before the kill and is still alive made progress.
                foreach (var (w, before) in running)
                {
                    if (w != victim)
                    {
                        WaitFor(() => w.Progress > before || w.Failure is not null, $"round {round}: worker {w.Pid} to make progress");
                    }
                }

                foreach (var w in workers)
                {
                    Assert.That(w.Failure, Is.Null, $"round {round}: worker {w.Pid} failed");
                }
            }

            TestContext.Out.WriteLine($"recovery (kill to member dropped, incl. list polling): median {Median(recoveryMs):F1} ms, max {recoveryMs.Max():F1} ms; rounds that saw a torn block: {tornSeen}");
        }
        catch (Exception)
        {
            TestContext.Out.WriteLine($"failed in round {round}; broker {(broker.Process.HasExited ? "has EXITED" : "is alive")}; broker stderr:\n{broker.Stderr}");
            throw;
        }
        finally
        {
            foreach (var w in workers)
            {
                w.Dispose();
            }
        }

        // 5. Nothing leaks: with every worker dead, the test is the only member, and destroying the container frees all.
        WaitFor(() => client.ListRaw().Containers.Single(c => c.Info.Name == "torture").MemberPids.Count == 1, "the dead workers to be dropped");
        AssertNoDeadHolders(SlotsInLockState(obj), [con.Slot], rounds);
        con.Destroy(s_bound);
        Assert.That(client.ListRaw().Containers, Is.Empty);
    }

    /// <summary>Every (block, slot, what) the object's lock records attribute to a slot right now.</summary>
    private static List<(int Block, int Slot, string What)> SlotsInLockState(SharedObject obj)
    {
        var found = new List<(int, int, string)>();
        for (int b = 0; b < obj.BlockCount; b++)
        {
            var s = Locks.BlockLockSnapshot.Take(obj.LockRecord(b), obj.LockLines);
            found.AddRange(s.ReaderSlots.Select(slot => (b, slot, "read-held")));
            found.AddRange(s.WaitingSlots.Select(slot => (b, slot, "waited on")));
            for (ulong lines = s.WaitingLines; lines != 0; lines &= lines - 1)
            {
                // A line's Waiting bit with no slot of the line flagged keeps readers out for no writer.
                int line = System.Numerics.BitOperations.TrailingZeroCount(lines);
                if (!s.WaitingSlots.Any(slot => slot >> 6 == line))
                {
                    found.Add((b, -1 - line, "line waited on by no slot"));
                }
            }

            if (s.Owner != 0)
            {
                found.Add((b, s.OwnerSlot, "owned"));
            }
        }

        return found;
    }

    private static void AssertNoDeadHolders(List<(int Block, int Slot, string What)> holders, HashSet<int> liveSlots, int round)
    {
        foreach (var (block, slot, what) in holders)
        {
            Assert.That(liveSlots, Does.Contain(slot), $"round {round}: block {block} {what} by slot {slot}, which is no live member");
        }
    }

    private static int AssertBlocksIntact(SharedObject obj, int round)
    {
        int torn = 0;
        using var lease = obj.Get(0, obj.Size, s_bound);
        var span = lease.ReadOnlySpan;
        for (int b = 0; b < obj.BlockCount; b++)
        {
            bool valid = BlockPattern.IsValid(span.Slice(b * BlockSize, BlockSize));
            bool markedTorn = Locks.BlockLock.IsTorn(obj.LockRecord(b));
            Assert.That(valid || markedTorn, Is.True, $"round {round}: block {b} is neither a complete write nor marked torn");
            torn += markedTorn ? 1 : 0;
        }

        return torn > 0 ? 1 : 0;
    }

    private static void WaitFor(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > s_bound)
            {
                Assert.Fail($"timed out after {s_bound.TotalSeconds} s waiting for {what}");
            }

            Thread.Sleep(2);
        }
    }

    private static double Median(List<double> xs) => xs.Count == 0 ? 0 : xs.OrderBy(x => x).ElementAt(xs.Count / 2);
}
