using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using SharedStore.Regions;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static IEnumerable<IScenario> ManyMembersScenarios() =>
    [
        new Write1BlockManyMembers(),
        new Join1024(),
    ];
}

/// <summary>
/// ns per uncontended 64-byte write of one block in a container made for 1 024 members (records of 17 reader lines),
/// against the same in a container made for 2 (one line). Two rows: with only the writer's own line ever used by a
/// reader, and with every one of the 17 lines announced in ReaderLines (the state after readers of every line came
/// and went; set directly, as the readers' first gets would): the writer then reads 17 lines instead of 1.
/// </summary>
internal sealed unsafe class Write1BlockManyMembers : IScenario
{
    public string Name => "write-1block-1024members";

    public string Description => "ns per uncontended 64-byte write of one block, container of 1024 member slots vs 2";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var many = client.CreateContainer("bench-w1024", SharedStoreClient.ProcessGroupId, new ContainerOptions { MaxMembers = 1024 });
        using var few = client.CreateContainer("bench-w2", SharedStoreClient.ProcessGroupId, new ContainerOptions { MaxMembers = 2 });
        using var a = many.CreateObject("o", 1 << 20);
        using var b = few.CreateObject("o", 1 << 20);
        using (a.Get(0, 64))
        using (b.Get(0, 64))
        {
            // one read each: the writer's own line is announced in both, as in any container that was read once
        }

        int iters = Math.Max(20_000, (int)(1_000_000 * context.Scale));
        byte[] src = new byte[64];
        var fresh = new List<double>();
        var allLines = new List<double>();
        var baseline = new List<double>();
        for (int round = 0; round < 9; round++)
        {
            baseline.Add(Time(b, src, iters));
            fresh.Add(Time(a, src, iters));
        }

        Interlocked.Or(ref a.LockRecord(0)->ReaderLines, (1UL << BlockLockDescriptor.LinesFor(1024)) - 1);
        for (int round = 0; round < 9; round++)
        {
            baseline.Add(Time(b, src, iters));
            allLines.Add(Time(a, src, iters));
        }

        double bl = Stats.Median(baseline.Skip(2));
        return
        [
            new BenchResult(Name, "median", "ns", Stats.Median(fresh.Skip(1)), "write-1block-2members", bl),
            new BenchResult(Name + "-17lines-used", "median", "ns", Stats.Median(allLines.Skip(1)), "write-1block-2members", bl),
        ];
    }

    private static double Time(SharedObject obj, byte[] src, int iters)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < iters; i++)
        {
            obj.Write(0, src);
        }

        return Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters;
    }
}

/// <summary>
/// 1 024 member processes (this one and 1 023 C processes, tests/SharedStore.Native.Tests/c/member.c) each take a
/// read lease on block 0; a writer in this process then waits for the block; every member puts. The figure is the time
/// from the last put (each member timestamps CLOCK_MONOTONIC just before its put) to the writer's return from its
/// one-byte write, against the same with 2 members (one C reader). A second row gives the broker's resident memory
/// per member (KiB), against its resident memory before the members joined.
/// </summary>
internal sealed unsafe class Join1024 : IScenario
{
    private const int Members = 1024;

    public string Name => "join-1024";

    public string Description => "ms from the last of 1024 members' puts to a waiting writer's entry vs with 2 members; broker KiB per member";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        string exe = CompileMember(context);
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-join", SharedStoreClient.ProcessGroupId, new ContainerOptions { MaxMembers = Members });
        using var obj = con.CreateObject("A", 1 << 20);
        int rounds = Math.Max(3, (int)(7 * context.Scale));

        // Baseline: one C member.
        var small = new List<double>();
        using (var one = new MemberSet(exe, broker.SocketPath, 1))
        {
            for (int r = 0; r < rounds; r++)
            {
                small.Add(one.HandOff(obj));
            }
        }

        long rssBefore = RssKiB(broker.Pid);
        var sw = Stopwatch.StartNew();
        using var all = new MemberSet(exe, broker.SocketPath, Members - 1);
        context.Log.WriteLine($"  {Members - 1} C members joined in {sw.Elapsed.TotalSeconds:F1} s");
        var large = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            large.Add(all.HandOff(obj));
        }

        long rssAfter = RssKiB(broker.Pid);
        return
        [
            new BenchResult(Name, "median", "ms", Stats.Median(large), "join-2", Stats.Median(small)),
            new BenchResult(Name + "-broker-kib-per-member", "value", "KiB", (rssAfter - rssBefore) / (double)(Members - 1), "broker-kib-before-joins", rssBefore),
        ];
    }

    private static string CompileMember(BenchContext context)
    {
        NativeBench.CompileCBench(context); // publishes the library when it is missing
        string exe = Path.Combine(context.WorkDirectory, "member");
        NativeBench.Run("gcc", ["-O2", "-Wall", "-std=c11", "-D_GNU_SOURCE", $"-I{Path.Combine(NativeBench.RepoRoot, "include")}", "-o", exe,
            Path.Combine(NativeBench.RepoRoot, "tests", "SharedStore.Native.Tests", "c", "member.c"),
            $"-L{NativeBench.LibraryDirectory}", "-lsharedstore", $"-Wl,-rpath,{NativeBench.LibraryDirectory}"], null, TimeSpan.FromMinutes(2));
        return exe;
    }

    private static long RssKiB(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException($"no VmRSS for pid {pid}");
    }

    /// <summary>C member processes in hold mode, driven through stdin.</summary>
    private sealed class MemberSet : IDisposable
    {
        private static readonly TimeSpan s_wait = TimeSpan.FromMinutes(3);
        private readonly List<Process> _processes = [];
        private readonly List<BlockingCollection<string>> _lines = [];

        public MemberSet(string exe, string socket, int count)
        {
            for (int i = 0; i < count; i++)
            {
                var psi = new ProcessStartInfo(exe) { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = false };
                psi.ArgumentList.Add("bench-join");
                psi.ArgumentList.Add("A");
                psi.ArgumentList.Add("hold");
                psi.Environment["SHAREDSTORE_SOCKET"] = socket;
                var lines = new BlockingCollection<string>();
                var p = new Process { StartInfo = psi };
                p.OutputDataReceived += (_, e) =>
                {
                    if (e.Data is not null)
                    {
                        lines.Add(e.Data);
                    }
                };
                p.Start();
                p.BeginOutputReadLine();
                _processes.Add(p);
                _lines.Add(lines);
            }

            Expect("joined");
        }

        /// <summary>One round: every member gets, a writer waits, every member puts; ms from the last put to the
        /// writer's return.</summary>
        public double HandOff(SharedObject obj)
        {
            Send("g");
            Expect("held");
            long returned = 0;
            var writer = new Thread(() =>
            {
                obj.Write(0, [1], TimeSpan.FromMinutes(2));
                returned = Stopwatch.GetTimestamp();
            });
            writer.Start();
            var sw = Stopwatch.StartNew();
            while (Volatile.Read(ref obj.LockRecord(0)->Owner) == 0)
            {
                if (sw.Elapsed > s_wait)
                {
                    throw new TimeoutException("the writer never claimed the block");
                }

                Thread.Yield();
            }

            Thread.Sleep(20); // past its 30 µs spin: asleep on the futex, as a writer behind 1 024 readers is
            Send("p");
            long lastPut = 0;
            foreach (var lines in _lines)
            {
                string line = Take(lines);
                if (!line.StartsWith("put ", StringComparison.Ordinal))
                {
                    throw new InvalidOperationException($"a member answered '{line}' to p");
                }

                lastPut = Math.Max(lastPut, long.Parse(line.AsSpan(4), CultureInfo.InvariantCulture));
            }

            if (!writer.Join(s_wait))
            {
                throw new TimeoutException("the writer did not get the block");
            }

            // Stopwatch on Linux is CLOCK_MONOTONIC in ns, the members' clock.
            return (returned - lastPut) * (1000.0 / Stopwatch.Frequency);
        }

        private void Send(string command)
        {
            foreach (var p in _processes)
            {
                p.StandardInput.WriteLine(command);
                p.StandardInput.Flush();
            }
        }

        private void Expect(string what)
        {
            foreach (var lines in _lines)
            {
                string line = Take(lines);
                if (line != what)
                {
                    throw new InvalidOperationException($"a member answered '{line}', expected '{what}'");
                }
            }
        }

        private static string Take(BlockingCollection<string> lines) =>
            lines.TryTake(out string? line, s_wait) ? line : throw new TimeoutException("a member did not answer within 3 minutes");

        public void Dispose()
        {
            foreach (var p in _processes)
            {
                try
                {
                    p.StandardInput.Close();
                }
                catch (IOException)
                {
                }
            }

            foreach (var p in _processes)
            {
                if (!p.WaitForExit(10_000))
                {
                    p.Kill();
                }

                p.Dispose();
            }
        }
    }
}
