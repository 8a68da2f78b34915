using System.Diagnostics;
using System.Globalization;
using SharedStore.Bench.PosixInterop;

namespace SharedStore.Bench;

/// <summary>ns per get+put of one block, uncontended, against libc's process-shared rwlock read pair
/// (<c>pthread-rwlock-rd</c>) and a CAS lock + release (<c>cas-pair</c>), both on the same kind of mapping (an
/// object's memfd mapping). Rounds alternate the three; the first round is a warm-up; medians.</summary>
internal sealed unsafe class GetPut1Block : IScenario
{
    public string Name => "get-put-1block";

    public string Description => "ns per get+put of one block (uncontended) vs pthread_rwlock_rdlock+unlock (PROCESS_SHARED) and a CAS lock+release on the same kind of mapping";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var setup = new ReadLockSetup(context, "bench-getput");
        var obj = setup.Object;
        long* word = (long*)setup.Control;
        void* rw = setup.Rwlock;
        int iters = Math.Max(100_000, (int)(5_000_000 * context.Scale));
        var values = new List<double>();
        var cas = new List<double>();
        var pthread = new List<double>();
        for (int round = 0; round < 9; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                using var lease = obj.Get(0, 4096);
            }

            values.Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);

            t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                while (Interlocked.CompareExchange(ref *word, 1, 0) != 0)
                {
                }

                Volatile.Write(ref *word, 0);
            }

            cas.Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);
            pthread.Add(GetPut1Block2Proc.PthreadPairs(rw, iters));
        }

        double v = Stats.Median(values.Skip(1));
        return
        [
            new BenchResult(Name, "median", "ns", v, "pthread-rwlock-rd", Stats.Median(pthread.Skip(1))),
            new BenchResult(Name, "median", "ns", v, "cas-pair", Stats.Median(cas.Skip(1))),
        ];
    }
}

/// <summary>What the read-lock scenarios share: a broker, a container with a 1 MiB object (the block got and put) and a
/// 4 KiB control object whose first bytes are the scenarios' words and whose byte 2048 (its own cache lines) holds a
/// PTHREAD_PROCESS_SHARED rwlock, initialized here: the baseline lock lives in the same kind of mapping as ours.</summary>
internal sealed unsafe class ReadLockSetup : IDisposable
{
    private readonly SharedStoreClient _client;
    private readonly Container _container;
    private readonly SharedObject _control;

    public ReadLockSetup(BenchContext context, string containerName)
    {
        Broker = new BenchBroker(context);
        _client = Broker.Connect();
        _container = _client.CreateContainer(containerName, SharedStoreClient.ProcessGroupId);
        Object = _container.CreateObject("one-block", 1 << 20);
        _control = _container.CreateObject("ctl", 4096);
        Control = (byte*)_control.GetAttributes().DataAddress;
        Pthread.InitShared(Rwlock);
    }

    public BenchBroker Broker { get; }

    public SharedObject Object { get; }

    public byte* Control { get; }

    public void* Rwlock => Control + 2048;

    public void Dispose()
    {
        _control.Dispose();
        Object.Dispose();
        _container.Dispose();
        _client.Dispose();
        Broker.Dispose();
    }
}

/// <summary>
/// Two processes get+put the same block in a loop at the same time: ns per pair per process (the mean of the two
/// processes' own figures), against two processes taking libc's process-shared rwlock for reading
/// (<c>pthread-rwlock-rd-2proc</c>) in the same shared mapping. Each round runs both loops of both processes, started
/// together through a phase word in shared memory; the first round is a warm-up; medians.
/// </summary>
internal sealed unsafe class GetPut1Block2Proc : IScenario
{
    private const int Rounds = 9;

    public string Name => "get-put-1block-2proc";

    public string Description => "ns per get+put per process, two processes on the same block at once vs two processes on one PROCESS_SHARED pthread rwlock (read)";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var setup = new ReadLockSetup(context, "bench-getput2");
        var obj = setup.Object;
        byte* c = setup.Control;
        int iters = Math.Max(100_000, (int)(2_000_000 * context.Scale));
        using var child = new ChildProcess("getput2", setup.Broker.SocketPath, "bench-getput2", Rounds.ToString(CultureInfo.InvariantCulture), iters.ToString(CultureInfo.InvariantCulture));
        _ = child.Read(TimeSpan.FromSeconds(60)); // "ready"
        var ours = new List<double>();
        var theirs = new List<double>();
        Loop(obj, c, iters, child: false, ours);
        string[] fields = child.Read(TimeSpan.FromSeconds(300)).Split(' ');
        theirs.AddRange(fields.Select(f => double.Parse(f, CultureInfo.InvariantCulture)));

        // ours/theirs: [getput r0, pthread r0, getput r1, ...]; per process and round, then the mean of the two.
        var getput = new List<double>();
        var pthread = new List<double>();
        for (int r = 1; r < Rounds; r++)
        {
            getput.Add((ours[2 * r] + theirs[2 * r]) / 2);
            pthread.Add((ours[(2 * r) + 1] + theirs[(2 * r) + 1]) / 2);
        }

        context.Log.WriteLine($"  per process (median, ns): this {Stats.Median(ours.Where((_, i) => i > 1 && i % 2 == 0)):F2} / {Stats.Median(ours.Where((_, i) => i > 1 && i % 2 == 1)):F2}, " +
            $"child {Stats.Median(theirs.Where((_, i) => i > 1 && i % 2 == 0)):F2} / {Stats.Median(theirs.Where((_, i) => i > 1 && i % 2 == 1)):F2} (get+put / pthread)");
        return [new BenchResult(Name, "median", "ns", Stats.Median(getput), "pthread-rwlock-rd-2proc", Stats.Median(pthread))];
    }

    /// <summary>The child: joins, says ready, runs the same loops and prints its figures on one line.</summary>
    public static int Child(string[] args)
    {
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = args[1] });
        using var con = client.JoinContainer(args[2]);
        using var obj = con.JoinObject("one-block");
        using var ctl = con.JoinObject("ctl");
        int iters = int.Parse(args[4], CultureInfo.InvariantCulture);
        Console.WriteLine("ready");
        var mine = new List<double>();
        Loop(obj, (byte*)ctl.GetAttributes().DataAddress, iters, child: true, mine);
        Console.WriteLine(string.Join(' ', mine.Select(x => x.ToString("R", CultureInfo.InvariantCulture))));
        return 0;
    }

    /// <summary>ns per pthread rdlock+unlock pair, <paramref name="iters"/> times.</summary>
    public static double PthreadPairs(void* rw, int iters)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < iters; i++)
        {
            Pthread.pthread_rwlock_rdlock(rw);
            Pthread.pthread_rwlock_unlock(rw);
        }

        return Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters;
    }

    /// <summary>Both processes: for each step, wait until both are at it (each announces itself in its own word, then
    /// waits for the other's), run the step's loop and record ns per pair. Steps alternate get+put and pthread.</summary>
    private static void Loop(SharedObject obj, byte* c, int iters, bool child, List<double> into)
    {
        long* me = (long*)c + (child ? 8 : 0);   // separate cache lines
        long* peer = (long*)c + (child ? 0 : 8);
        void* rw = c + 2048;
        for (int step = 1; step <= 2 * Rounds; step++)
        {
            Volatile.Write(ref *me, step);
            var sw = Stopwatch.StartNew();
            var spinner = default(SpinWait);
            while (Volatile.Read(ref *peer) < step)
            {
                spinner.SpinOnce(sleep1Threshold: -1);
                if (sw.ElapsedMilliseconds > 60_000)
                {
                    throw new TimeoutException($"the other process never reached step {step}");
                }
            }

            if (step % 2 == 1)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < iters; i++)
                {
                    using var lease = obj.Get(0, 4096);
                }

                into.Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);
            }
            else
            {
                into.Add(PthreadPairs(rw, iters));
            }
        }
    }
}

/// <summary>
/// Where the time of a get+put goes (a diagnostic, no target): the same pair built up one piece at a time on the same
/// block record, in one run, so the difference between two rows is the cost of the piece added. Rows, each against
/// <c>pthread-rwlock-rd</c>: <c>two-cas</c> (a CAS increment and a CAS decrement of one word of the lock mapping: the
/// floor of a reader lock whose release must be a locked RMW), <c>blocklock</c> (BlockLock.TryAcquireReadFast +
/// ReleaseRead of block 0 with this process's slot: the writer checks, the Dekker re-check, the wake check),
/// <c>blocklock+record</c> (plus renting and releasing a lease record), and <c>get-put</c> (SharedObject.Get + put).
/// </summary>
internal sealed unsafe class GetPutPieces : IScenario
{
    public string Name => "get-put-pieces";

    public string Description => "diagnostic: ns of a get+put built up piece by piece (two CAS, block lock, lease record, full get/put) vs pthread-rwlock-rd";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var setup = new ReadLockSetup(context, "bench-pieces");
        var obj = setup.Object;
        long* word = (long*)setup.Control;
        void* rw = setup.Rwlock;
        var rec = obj.LockRecords;
        int slot = obj.Container.Slot;
        int iters = Math.Max(100_000, (int)(5_000_000 * context.Scale));
        string[] names = ["two-cas", "blocklock", "blocklock+record", "get-put", "pthread"];
        var rows = names.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < 9; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                long old = Volatile.Read(ref *word);
                if (Interlocked.CompareExchange(ref *word, old + 1, old) == old)
                {
                    old++;
                    _ = Interlocked.CompareExchange(ref *word, old - 1, old);
                }
            }

            rows[0].Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);

            t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                if (Locks.BlockLock.TryAcquireReadFast(rec, slot))
                {
                    Locks.BlockLock.ReleaseRead(rec, slot);
                }
            }

            rows[1].Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);

            t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                if (Locks.BlockLock.TryAcquireReadFast(rec, slot))
                {
                    var r = LeaseRecord.Rent(obj);
                    Locks.BlockLock.ReleaseRead(rec, slot);
                    LeaseRecord.Release(r, r.Generation);
                }
            }

            rows[2].Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);

            t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < iters; i++)
            {
                using var lease = obj.Get(0, 4096);
            }

            rows[3].Add(Stats.Ns(Stopwatch.GetTimestamp() - t0) / iters);
            rows[4].Add(GetPut1Block2Proc.PthreadPairs(rw, iters));
        }

        double baseline = Stats.Median(rows[4].Skip(1));
        return [.. names.Take(4).Select((n, i) => new BenchResult($"{Name}:{n}", "median", "ns", Stats.Median(rows[i].Skip(1)), "pthread-rwlock-rd", baseline))];
    }
}
