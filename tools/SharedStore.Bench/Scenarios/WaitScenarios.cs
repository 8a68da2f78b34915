using System.Diagnostics;
using System.Globalization;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static IEnumerable<IScenario> WaitScenarios() =>
    [
        new WriteWithoutWaiters("write-64mib-nowaiter", 64 << 20, 2),
        new WriteWithoutWaiters("write-64b-nowaiter", 64, 2_000_000),
        new NotifyCrossProcess("notify-xproc", spinning: false),
        new NotifyCrossProcess("notify-xproc-spinning", spinning: true),
        new WaitContainerCrossProcess(),
    ];
}

/// <summary>
/// A write with no waiter against the same write before issue 17: the baseline is SharedObject.Write's code with the
/// same calls (BlockRange AcquireWrite/ReleaseWrite through the object's view) and the same copy into the same mapping,
/// without the version steps (the Pending store, the locked add, the block version store, the sleepers-bit test).
/// Rounds alternate so both see the same machine.
/// </summary>
internal sealed unsafe class WriteWithoutWaiters(string name, int size, int iterations) : IScenario
{
    public string Name => name;

    public string Description => $"ns per Write of {size} bytes with no waiter vs the same locks and copy without the version steps (the write before issue 17)";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-nowaiter", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("w", size);
        byte[] src = new byte[size];
        new Random(1).NextBytes(src);
        int iters = Math.Max(size > 1 << 20 ? 1 : 10_000, (int)(iterations * context.Scale));
        var values = new List<double>();
        var baselines = new List<double>();
        var addOnly = new List<double>();
        int rounds = size > 1 << 20 ? 31 : 11;
        for (int round = 0; round < rounds; round++)
        {
            // A, B in even rounds and B, A in odd ones: neither side always runs second (warm TLB, caches).
            for (int side = 0; side < 2; side++)
            {
                bool real = (side == 0) == (round % 2 == 0);
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < iters; i++)
                {
                    if (real)
                    {
                        obj.Write(0, src);
                    }
                    else
                    {
                        BaselineWrite(obj, con, src, size, addOnly: false);
                    }
                }

                (real ? values : baselines).Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);
            }

            if (size <= 1 << 20)
            {
                // Where the difference goes: the baseline plus only the version word's locked add.
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < iters; i++)
                {
                    BaselineWrite(obj, con, src, size, addOnly: true);
                }

                addOnly.Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);
            }
        }

        var results = new List<BenchResult> { new(Name, "median", "ns", Stats.Median(values.Skip(1)), "write-before-versions", Stats.Median(baselines.Skip(1))) };
        if (addOnly.Count > 0)
        {
            results.Add(new(Name + "-addonly", "median", "ns", Stats.Median(addOnly.Skip(1)), "write-before-versions", Stats.Median(baselines.Skip(1))));
        }

        return results;
    }

    private static void BaselineWrite(SharedObject obj, Container con, byte[] src, int size, bool addOnly)
    {
        // SharedObject.Write line by line (its checks, the WouldDeadlock check, program order after this
        // process's awrites, the same BlockRange lock and release calls, the copy) without the three version
        // steps (BeginWrite, Publish, WakeIfSleepers): the write as it was before issue 17.
        if (obj.Connection.Lost || (ulong)size > (ulong)obj.Size || !con.CanWrite)
        {
            throw new InvalidOperationException("cannot write");
        }

        BlockRange range = obj.View.Range(0, size);
        obj.ThrowIfHolds(0, size);
        obj.Connection.OrderAfterAsyncWrites(Timeout.InfiniteTimeSpan);
        var wait = obj.View.Wait(obj.Connection.WaitPolicy, Timeout.InfiniteTimeSpan, default);
        if (range.AcquireWrite(ref wait) != LockStatus.Acquired)
        {
            throw new InvalidOperationException("cannot lock");
        }

        src.CopyTo(new Span<byte>(obj.DataPointer, size));
        if (addOnly)
        {
            Interlocked.Add(ref *(long*)((byte*)obj.LockRecords + ObjectVersionDescriptor.VersionWordOffset), ObjectVersionDescriptor.VersionIncrement);
        }

        range.ReleaseWrite(0, size);
    }
}

/// <summary>µs from the return of a Write in one process to the return of WaitForChange in another (the waiter asleep
/// in FUTEX_WAIT on the version word, or spinning), against half a futex round trip between the same two processes.
/// Both sides stamp with Stopwatch (CLOCK_MONOTONIC, one clock for every process): the writer right after Write
/// returned, the waiter right after WaitForChange returned. The wake happens inside Write (after the locks are
/// released), so a waiter woken on the other vCPU may return before the writer's FUTEX_WAKE system call does: such a
/// sample is negative, and counts as it is. A second row gives the same from the Write's call.</summary>
internal sealed unsafe class NotifyCrossProcess(string name, bool spinning) : IScenario
{
    public string Name => name;

    public string Description => $"µs from a Write's return to WaitForChange's return in another process, the waiter {(spinning ? "spinning" : "asleep in FUTEX_WAIT (seen in /proc)")}, vs half a futex round trip";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-handoff", SharedStoreClient.ProcessGroupId); // the pingpong child's container
        using var obj = con.CreateObject("n", 4096);
        using var ctl = con.CreateObject("ctl", 4096);
        long* c = (long*)ctl.GetAttributes().DataAddress; // [0] phase, [2] waiter's return time, [4] its word's address, [6] its tid, [8] futex word, [10] next-round word
        int rounds = Math.Max(50, (int)(2000 * context.Scale));
        using var child = new ChildProcess("notify", broker.SocketPath, "bench-handoff", rounds.ToString(CultureInfo.InvariantCulture), spinning ? "spin" : "sleep");
        var fromReturn = new List<double>();
        var fromCall = new List<double>();
        byte[] one = [1];
        for (int i = 0; i < rounds; i++)
        {
            HandoffCrossProcess.SpinUntil(c, (2 * i) + 1); // the waiter is about to wait for version i + 1
            if (!spinning)
            {
                WaitUntilInFutexWait(child.Pid, c);
            }
            else
            {
                long until = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 20_000); // 50 µs: it spins by now
                while (Stopwatch.GetTimestamp() < until)
                {
                    Thread.SpinWait(10);
                }
            }

            long called = Stopwatch.GetTimestamp();
            obj.Write(0, one);
            long returned = Stopwatch.GetTimestamp();
            SpinPast(c, (2 * i) + 1); // phase 2i+2: the waiter stamped its return
            long woke = Volatile.Read(ref c[2]);
            fromReturn.Add(Stats.Us(woke - returned));
            fromCall.Add(Stats.Us(woke - called));
            int* go = (int*)(c + 10);
            Volatile.Write(ref *go, i + 1); // the waiter sleeps until then (see Child)
            Interop.Libc.FutexWake(go, 1);
        }

        _ = child.Read(TimeSpan.FromSeconds(30)); // "done"
        double halfRtt = FutexPingPong(context, broker, c);
        var r = fromReturn.Skip(5).ToList();
        var k = fromCall.Skip(5).ToList();
        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  {Name}: from return p10/p50/p90 {Stats.Percentile(r, 10):F1}/{Stats.Percentile(r, 50):F1}/{Stats.Percentile(r, 90):F1} us, waiter first in {100.0 * r.Count(x => x < 0) / r.Count:F0} %; from call p10/p50/p90 {Stats.Percentile(k, 10):F1}/{Stats.Percentile(k, 50):F1}/{Stats.Percentile(k, 90):F1} us; futex-pingpong half RTT {halfRtt:F1} us"));
        return
        [
            new BenchResult(Name, "median", "us", Stats.Median(fromReturn.Skip(5)), "futex-pingpong", halfRtt),
            new BenchResult(Name + "-from-call", "median", "us", Stats.Median(fromCall.Skip(5)), "futex-pingpong", halfRtt),
        ];
    }

    /// <summary>Observes the waiter's thread inside FUTEX_WAIT on its version word: /proc/PID/task/TID/syscall reads
    /// "202 0xADDR …" (202 = futex on x86-64) while the thread is blocked in that call.</summary>
    private static void WaitUntilInFutexWait(int pid, long* c)
    {
        string path = $"/proc/{pid}/task/{Volatile.Read(ref c[6])}/syscall";
        string expect = $"202 0x{Volatile.Read(ref c[4]):x} ";
        var sw = Stopwatch.StartNew();
        while (!File.ReadAllText(path).StartsWith(expect, StringComparison.Ordinal))
        {
            if (sw.ElapsedMilliseconds > 30_000)
            {
                throw new TimeoutException($"the waiter never slept on its version word ({path}: {File.ReadAllText(path)})");
            }

            Thread.SpinWait(20);
        }
    }

    private static void SpinPast(long* c, long phase)
    {
        var sw = Stopwatch.StartNew();
        var spinner = default(SpinWait);
        while (Volatile.Read(ref c[0]) <= phase)
        {
            spinner.SpinOnce(sleep1Threshold: -1);
            if (sw.ElapsedMilliseconds > 30_000)
            {
                throw new TimeoutException($"phase {phase + 1} never came");
            }
        }
    }

    /// <summary>Half a futex round trip between this process and a child, over a word of <paramref name="c"/>'s memory.</summary>
    internal static double FutexPingPong(BenchContext context, BenchBroker broker, long* c)
    {
        int pings = Math.Max(200, (int)(5000 * context.Scale));
        using var ponger = new ChildProcess("pingpong", broker.SocketPath, "bench-handoff", pings.ToString(CultureInfo.InvariantCulture));
        _ = ponger.Read(TimeSpan.FromSeconds(30)); // "ready"
        int* w = (int*)(c + 8);
        Volatile.Write(ref *w, 0);
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < pings; i++)
        {
            Volatile.Write(ref *w, (2 * i) + 1);
            Interop.Libc.FutexWake(w, 1);
            while (Volatile.Read(ref *w) != (2 * i) + 2)
            {
                Interop.Libc.FutexWait(w, (2 * i) + 1, 1_000_000_000);
            }
        }

        double halfRtt = Stats.Us(Stopwatch.GetTimestamp() - t0) / pings / 2;
        _ = ponger.Read(TimeSpan.FromSeconds(30));
        return halfRtt;
    }

    /// <summary>The waiter: announces each round, waits for the next version, stamps its return.</summary>
    public static int Child(string[] args)
    {
        bool spin = args[4] == "spin";
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions
        {
            SocketPath = args[1],
            LockSpin = spin ? TimeSpan.FromSeconds(10) : TimeSpan.FromMicroseconds(30),
        });
        using var con = client.JoinContainer(args[2]);
        using var obj = con.JoinObject("n");
        using var ctl = con.JoinObject("ctl");
        long* c = (long*)ctl.GetAttributes().DataAddress;
        int rounds = int.Parse(args[3], CultureInfo.InvariantCulture);
        // For the parent's /proc check: this thread's id and the address it sleeps on (the version word).
        string self = new FileInfo("/proc/thread-self").LinkTarget!; // "PID/task/TID"
        Volatile.Write(ref c[4], (long)obj.LockRecords + ObjectVersionDescriptor.VersionWordOffset);
        Volatile.Write(ref c[6], long.Parse(self[(self.LastIndexOf('/') + 1)..], CultureInfo.InvariantCulture));
        long seen = obj.Version;
        for (int i = 0; i < rounds; i++)
        {
            Volatile.Write(ref c[0], (2 * i) + 1);
            seen = obj.WaitForChange(seen, TimeSpan.FromSeconds(30));
            Volatile.Write(ref c[2], Stopwatch.GetTimestamp());
            Volatile.Write(ref c[0], (2 * i) + 2);

            // Sleep (no spinning) until the parent has taken the sample: a waiter woken onto the writer's vCPU that
            // went straight into its next WaitForChange would spin there for LockSpin and hold off the writer's
            // return from Write, which is what the sample measures from.
            int* go = (int*)(c + 10);
            while (Volatile.Read(ref *go) != i + 1)
            {
                Interop.Libc.FutexWait(go, Volatile.Read(ref *go), 1_000_000_000);
            }
        }

        Console.WriteLine("done");
        return 0;
    }
}

/// <summary>ms from the return of CreateContainer in one process to the return of WaitForContainer in another (the
/// broker pushed the event; the waiter then joined), against one control round trip (<c>status</c>).</summary>
internal sealed class WaitContainerCrossProcess : IScenario
{
    public string Name => "wait-container-xproc";

    public string Description => "ms from CreateContainer's return to WaitForContainer's return in another process vs one status round trip";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        int rounds = Math.Max(20, (int)(200 * context.Scale));
        using var child = new ChildProcess("wait-container", broker.SocketPath, rounds.ToString(CultureInfo.InvariantCulture));
        var samples = new List<double>();
        for (int i = 0; i < rounds; i++)
        {
            while (client.Call(new Request { Status = new StatusRequest() }, TimeSpan.FromSeconds(30), default).Response.Status.NameWaits == 0)
            {
                Thread.Yield(); // until the waiter's wait is in the broker
            }

            using var con = client.CreateContainer("bench-wait-" + i.ToString(CultureInfo.InvariantCulture), SharedStoreClient.ProcessGroupId);
            long created = Stopwatch.GetTimestamp();
            long joined = long.Parse(child.Read(TimeSpan.FromSeconds(30)), CultureInfo.InvariantCulture);
            samples.Add(Stats.Us(joined - created) / 1000);
            con.Destroy(TimeSpan.FromSeconds(30)); // the waiter left before it answered
        }

        var rtts = new List<double>();
        for (int i = 0; i < rounds * 5; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            client.Call(new Request { Status = new StatusRequest() }, TimeSpan.FromSeconds(30), default);
            rtts.Add(Stats.Us(Stopwatch.GetTimestamp() - t0) / 1000);
        }

        return [new BenchResult(Name, "median", "ms", Stats.Median(samples.Skip(2)), "status-roundtrip", Stats.Median(rtts.Skip(5)))];
    }

    public static int Child(string[] args)
    {
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
        int rounds = int.Parse(args[2], CultureInfo.InvariantCulture);
        for (int i = 0; i < rounds; i++)
        {
            var con = client.WaitForContainer("bench-wait-" + i.ToString(CultureInfo.InvariantCulture), TimeSpan.FromSeconds(60));
            long t = Stopwatch.GetTimestamp();
            con.Leave();
            Console.WriteLine(t.ToString(CultureInfo.InvariantCulture));
        }

        return 0;
    }
}
