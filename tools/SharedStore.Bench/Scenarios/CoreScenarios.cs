using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using SharedStore.Regions;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static partial IEnumerable<IScenario> CoreScenarios() =>
    [
        new GetPut1Block(),
        new GetPut1Block2Proc(),
        new GetPutPieces(),
        new Write64MiB(),
        new Write1MiB(),
        new Get64MiBCrossProcess(),
        new HandoffCrossProcess("handoff-xproc", holdMicros: 10),
        new HandoffCrossProcess("handoff-xproc-asleep", holdMicros: 5000),
        new RecoveryKill9(),
        new CreateCost("create-16mib", 16L << 20),
        new CreateCost("create-1gib", 1L << 30),
        new ManyObjects(),
        new SpscBaseline(),
    ];
}

/// <summary>GB/s of a 64 MiB synchronous write against a plain memcpy into the same mapped memory.</summary>
internal sealed unsafe class Write64MiB : IScenario
{
    public string Name => "write-64mib";

    public string Description => "GB/s of object write of 64 MiB vs memcpy of 64 MiB into the same mapping";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        const int Size = 64 << 20;
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-write", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("w", Size);
        byte[] src = new byte[Size];
        new Random(1).NextBytes(src);
        var dst = new Span<byte>((byte*)obj.GetAttributes().DataAddress, Size);
        var values = new List<double>();
        var baselines = new List<double>();
        for (int round = 0; round < 15; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            obj.Write(0, src);
            values.Add(Size / (Stats.Ns(Stopwatch.GetTimestamp() - t0)));

            t0 = Stopwatch.GetTimestamp();
            src.CopyTo(dst);
            baselines.Add(Size / (Stats.Ns(Stopwatch.GetTimestamp() - t0)));
        }

        return [new BenchResult(Name, "median", "GB/s", Stats.Median(values.Skip(2)), "memcpy-64mib", Stats.Median(baselines.Skip(2)))];
    }
}

/// <summary>µs for another process to get+put a 64 MiB object, against sending 64 MiB over a Unix socket to it.</summary>
internal sealed class Get64MiBCrossProcess : IScenario
{
    private const int Size = 64 << 20;

    public string Name => "get-64mib-xproc";

    public string Description => "µs for a process to get+put a 64 MiB object written by another vs sending 64 MiB over a Unix socket";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-get64", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("big", Size);
        byte[] payload = new byte[Size];
        new Random(2).NextBytes(payload);
        obj.Write(0, payload);

        int iters = Math.Max(50, (int)(2000 * context.Scale));
        using var child = new ChildProcess("get64", broker.SocketPath, "bench-get64", "big", iters.ToString(CultureInfo.InvariantCulture));
        double getUs = double.Parse(child.Read(TimeSpan.FromSeconds(120)), CultureInfo.InvariantCulture);

        // Baseline: the same 64 MiB through a Unix stream socket to another process, until it has all of it.
        string path = Path.Combine(context.WorkDirectory, "uds.sock");
        using var receiver = new ChildProcess("uds-recv", path, Size.ToString(CultureInfo.InvariantCulture));
        _ = receiver.Read(TimeSpan.FromSeconds(30)); // "ready"
        using var sock = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        sock.Connect(new UnixDomainSocketEndPoint(path));
        var times = new List<double>();
        byte[] ack = new byte[1];
        int udsIters = Math.Max(5, (int)(30 * context.Scale));
        for (int i = 0; i < udsIters; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            sock.Send(payload);
            sock.Receive(ack);
            times.Add(Stats.Us(Stopwatch.GetTimestamp() - t0));
        }

        return [new BenchResult(Name, "median", "us", getUs, "uds-64mib", Stats.Median(times.Skip(1)))];
    }
}

/// <summary>µs from a reader's put to the entry of a writer of another process waiting on that block, against half a
/// futex round trip between two processes.</summary>
internal sealed unsafe class HandoffCrossProcess(string name, int holdMicros) : IScenario
{
    public string Name => name;

    public string Description => $"µs from a reader's put (after holding {holdMicros} µs) to the entry of a waiting writer in another process vs half a futex round trip";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-handoff", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("h", 1 << 20);
        using var ctl = con.CreateObject("ctl", 4096);
        long* c = (long*)ctl.GetAttributes().DataAddress; // [0] phase, [1] put time, [2] entry time, [8] futex word
        int rounds = Math.Max(50, (int)((holdMicros > 1000 ? 200 : 2000) * context.Scale));
        using var child = new ChildProcess("handoff", broker.SocketPath, "bench-handoff", rounds.ToString(CultureInfo.InvariantCulture));
        var samples = new List<double>();
        long holdTicks = holdMicros * Stopwatch.Frequency / 1_000_000;
        for (int i = 0; i < rounds; i++)
        {
            var lease = obj.Get(0, 8);
            Volatile.Write(ref c[0], (2 * i) + 1);
            // Wait until the writer has announced itself on block 0 (Owner set, pending on our read).
            while (Volatile.Read(ref obj.LockRecords->Owner) == 0)
            {
                Thread.SpinWait(10);
            }

            long until = Stopwatch.GetTimestamp() + holdTicks;
            while (Stopwatch.GetTimestamp() < until)
            {
                Thread.SpinWait(10);
            }

            Volatile.Write(ref c[1], Stopwatch.GetTimestamp());
            lease.Dispose();
            SpinUntil(c, (2 * i) + 2);
            samples.Add(Stats.Us(Volatile.Read(ref c[2]) - Volatile.Read(ref c[1])));
        }

        _ = child.Read(TimeSpan.FromSeconds(30)); // "done"

        // Baseline: futex ping-pong between the same two processes over a word of the same shared memory.
        double halfRtt = NotifyCrossProcess.FutexPingPong(context, broker, c);
        return [new BenchResult(Name, "median", "us", Stats.Median(samples.Skip(5)), "futex-pingpong", halfRtt)];
    }

    internal static void SpinUntil(long* c, long phase)
    {
        var sw = Stopwatch.StartNew();
        var spinner = default(SpinWait);
        while (Volatile.Read(ref c[0]) != phase)
        {
            spinner.SpinOnce(sleep1Threshold: -1); // spins, then yields: the peer may need this core (2 vCPUs)
            if (sw.ElapsedMilliseconds > 30_000)
            {
                throw new TimeoutException($"phase {phase} never came");
            }
        }
    }
}

/// <summary>The child-process roles of the scenarios above.</summary>
internal static unsafe class ChildRoles
{
    public static int Run(string[] args)
    {
        switch (args[0])
        {
            case "get64":
            {
                using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
                using var con = client.JoinContainer(args[2]);
                using var obj = con.JoinObject(args[3]);
                int iters = int.Parse(args[4], CultureInfo.InvariantCulture);
                var us = new List<double>();
                for (int i = 0; i < iters; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    using (var lease = obj.Get(0, obj.Size))
                    {
                    }

                    us.Add(Stats.Us(Stopwatch.GetTimestamp() - t0));
                }

                Console.WriteLine(Stats.Median(us.Skip(5)).ToString(CultureInfo.InvariantCulture));
                return 0;
            }

            case "uds-recv":
            {
                int size = int.Parse(args[2], CultureInfo.InvariantCulture);
                using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                listener.Bind(new UnixDomainSocketEndPoint(args[1]));
                listener.Listen(1);
                Console.WriteLine("ready");
                using var s = listener.Accept();
                byte[] buf = new byte[size];
                while (true)
                {
                    int got = 0;
                    while (got < size)
                    {
                        int n = s.Receive(buf, got, size - got, SocketFlags.None);
                        if (n == 0)
                        {
                            return 0;
                        }

                        got += n;
                    }

                    s.Send(buf.AsSpan(0, 1));
                }
            }

            case "handoff":
            {
                using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
                using var con = client.JoinContainer(args[2]);
                using var obj = con.JoinObject("h");
                using var ctl = con.JoinObject("ctl");
                long* c = (long*)ctl.GetAttributes().DataAddress;
                int rounds = int.Parse(args[3], CultureInfo.InvariantCulture);
                byte[] eight = new byte[8];
                for (int i = 0; i < rounds; i++)
                {
                    HandoffCrossProcess.SpinUntil(c, (2 * i) + 1);
                    obj.Write(0, eight, TimeSpan.FromSeconds(30));
                    Volatile.Write(ref c[2], Stopwatch.GetTimestamp());
                    Volatile.Write(ref c[0], (2 * i) + 2);
                }

                Console.WriteLine("done");
                return 0;
            }

            case "pingpong":
            {
                using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
                using var con = client.JoinContainer(args[2]);
                using var ctl = con.JoinObject("ctl");
                int* w = (int*)((long*)ctl.GetAttributes().DataAddress + 8);
                int pings = int.Parse(args[3], CultureInfo.InvariantCulture);
                Console.WriteLine("ready");
                for (int i = 0; i < pings; i++)
                {
                    while (Volatile.Read(ref *w) != (2 * i) + 1)
                    {
                        Interop.Libc.FutexWait(w, 2 * i, 1_000_000_000);
                    }

                    Volatile.Write(ref *w, (2 * i) + 2);
                    Interop.Libc.FutexWake(w, 1);
                }

                Console.WriteLine("done");
                return 0;
            }

            case "hold":
            {
                using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
                using var con = client.JoinContainer(args[2]);
                using var obj = con.JoinObject("k");
                var lease = obj.Get(0, 8);
                Console.WriteLine("held");
                Thread.Sleep(Timeout.Infinite); // until kill -9
                lease.Dispose();
                return 0;
            }

            case "kill-writer":
            {
                using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
                using var con = client.JoinContainer(args[2]);
                using var obj = con.JoinObject("k");
                using var ctl = con.JoinObject("ctl");
                long* c = (long*)ctl.GetAttributes().DataAddress;
                int rounds = int.Parse(args[3], CultureInfo.InvariantCulture);
                byte[] eight = new byte[8];
                Console.WriteLine("ready");
                for (int i = 0; i < rounds; i++)
                {
                    HandoffCrossProcess.SpinUntil(c, (2 * i) + 1);
                    obj.Write(0, eight, TimeSpan.FromSeconds(60));
                    Volatile.Write(ref c[2], Stopwatch.GetTimestamp());
                    Volatile.Write(ref c[0], (2 * i) + 2);
                }

                return 0;
            }

            case "spsc-consumer":
                return SpscBaseline.RunConsumerChild(args[1..]);

            case "notify":
                return NotifyCrossProcess.Child(args);

            case "getput2":
                return GetPut1Block2Proc.Child(args);

            case "wait-container":
                return WaitContainerCrossProcess.Child(args);

            default:
                Console.Error.WriteLine($"unknown child role {args[0]}");
                return 2;
        }
    }
}
