using System.Diagnostics;
using System.Globalization;

namespace SharedStore.Bench;

/// <summary>ms from kill -9 of a process holding a get lease to the entry of a writer (another process) waiting on
/// that block; p50 and p99 over many rounds. Baseline: ms from the same kill to the parent reaping the dead process
/// (the operating system's own notice of the death).</summary>
internal sealed unsafe class RecoveryKill9 : IScenario
{
    public string Name => "recovery-kill9";

    public string Description => "ms from kill -9 of a lease holder to a waiting writer's entry (p50, p99) vs kill-to-reap of the same process";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-kill", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("k", 1 << 20);
        using var ctl = con.CreateObject("ctl", 4096);
        long* c = (long*)ctl.GetAttributes().DataAddress; // [0] phase, [2] writer entry time
        int rounds = Math.Max(20, (int)(200 * context.Scale));
        using var writer = new ChildProcess("kill-writer", broker.SocketPath, "bench-kill", rounds.ToString(CultureInfo.InvariantCulture));
        _ = writer.Read(TimeSpan.FromSeconds(30)); // ready
        var recovery = new List<double>();
        var reap = new List<double>();
        for (int i = 0; i < rounds; i++)
        {
            using var holder = new ChildProcess("hold", broker.SocketPath, "bench-kill");
            _ = holder.Read(TimeSpan.FromSeconds(30)); // held
            Volatile.Write(ref c[0], (2 * i) + 1);
            while (Volatile.Read(ref obj.LockRecords->Owner) == 0)
            {
                Thread.SpinWait(20); // the writer announced itself and now waits for the holder's read
            }

            Thread.Sleep(2); // long enough for the writer to stop spinning and sleep on the futex
            long t0 = Stopwatch.GetTimestamp();
            holder.Kill();
            long tReaped = Stopwatch.GetTimestamp();
            HandoffCrossProcess.SpinUntil(c, (2 * i) + 2);
            recovery.Add((Volatile.Read(ref c[2]) - t0) * 1000.0 / Stopwatch.Frequency);
            reap.Add((tReaped - t0) * 1000.0 / Stopwatch.Frequency);
        }

        return
        [
            new BenchResult(Name, "p50", "ms", Stats.Percentile(recovery, 50), "kill9-reap", Stats.Percentile(reap, 50)),
            new BenchResult(Name, "p99", "ms", Stats.Percentile(recovery, 99), "kill9-reap", Stats.Percentile(reap, 99)),
        ];
    }
}
