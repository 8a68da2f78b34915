using System.Runtime.Versioning;
using SharedStore.Devices;

namespace SharedStore.Bench.Devices;

/// <summary>
/// The device scenarios. Each runs fio first as the baseline on the same file with the same block size, depth and
/// O_DIRECT flag, then the SharedStore scheduler through <see cref="QueueDepthLoop"/> for the same duration.
/// </summary>
[SupportedOSPlatform("linux")]
internal static class DeviceBenchmarks
{
    public const int UringDepth = 32;
    public const int SeqWriteDepth = 8;
    public const int PoolThreads = 8;

    public static TimeSpan Runtime(BenchContext context) =>
        TimeSpan.FromSeconds(Math.Clamp(10 * context.Scale, 2, 15));

    public static IReadOnlyList<BenchResult> UringRandRead(BenchContext context)
    {
        const string name = "device-uring-randread-4k-direct";
        (string path, long size, TimeSpan t) = Prepare(context);
        double fio = Fio.ReadIops(Fio.RunJob(FioArgs(path, size, t, "io_uring", "randread", "4k", UringDepth, 1), context.Log, t * 3));
        double ours = Measure(context, new IoUringScheduler(256), path, DeviceMode.Direct | DeviceMode.RandomAccess,
            RandomAccessOperation.Read, 1 << 12, UringDepth, sequential: false, size, t);
        return [new BenchResult(name, "iops", "IOPS", ours, $"fio io_uring qd{UringDepth} direct", fio)];
    }

    public static IReadOnlyList<BenchResult> UringSeqWrite(BenchContext context)
    {
        const string name = "device-uring-seqwrite-1m";
        (string path, long size, TimeSpan t) = Prepare(context);
        double fio = Fio.WriteMBps(Fio.RunJob(FioArgs(path, size, t, "io_uring", "write", "1m", SeqWriteDepth, 1), context.Log, t * 3));
        double iops = Measure(context, new IoUringScheduler(256), path, DeviceMode.Direct | DeviceMode.SequentialAccess,
            RandomAccessOperation.Write, 1 << 20, SeqWriteDepth, sequential: true, size, t);
        return [new BenchResult(name, "bw", "MB/s", iops * (1 << 20) / 1e6, $"fio io_uring qd{SeqWriteDepth} direct 1m", fio)];
    }

    public static IReadOnlyList<BenchResult> ThreadPoolRandRead(BenchContext context)
    {
        const string name = "device-threadpool-randread-4k-direct";
        (string path, long size, TimeSpan t) = Prepare(context);
        double fio = Fio.ReadIops(Fio.RunJob(FioArgs(path, size, t, "psync", "randread", "4k", 1, PoolThreads), context.Log, t * 3));

        // Depth = threads: one outstanding transfer per thread, exactly what fio's psync jobs do.
        double ours = Measure(context, new ThreadPoolScheduler(PoolThreads), path, DeviceMode.Direct | DeviceMode.RandomAccess,
            RandomAccessOperation.Read, 1 << 12, PoolThreads, sequential: false, size, t);
        return [new BenchResult(name, "iops", "IOPS", ours, $"fio psync numjobs={PoolThreads} direct", fio)];
    }

    /// <summary>The measurement behind the factory's per-mode choice: 4 KiB random reads that hit the page cache,
    /// thread pool (value) against io_uring (baseline), same depth.</summary>
    public static IReadOnlyList<BenchResult> BufferedRandRead(BenchContext context)
    {
        const string name = "device-buffered-randread-4k-cached";
        (string path, _, TimeSpan t) = Prepare(context);
        long hot = 256L << 20; // 256 MiB, read once below so every measured read is a page-cache hit
        using (var warm = new RandomAccessFileDevice(path, DeviceMode.ReadOnly | DeviceMode.SequentialAccess))
        using (var s = new ThreadPoolScheduler(2))
        {
            new QueueDepthLoop(s, warm, RandomAccessOperation.Read, 1 << 20, 4, sequential: true, hot)
                .Run(TimeSpan.Zero, TimeSpan.FromSeconds(1));
        }

        TimeSpan shortRun = TimeSpan.FromSeconds(Math.Max(2, t.TotalSeconds / 2));
        double pool = Measure(context, new ThreadPoolScheduler(2), path, DeviceMode.ReadOnly, RandomAccessOperation.Read,
            1 << 12, UringDepth, sequential: false, hot, shortRun);
        double uring = Measure(context, new IoUringScheduler(256), path, DeviceMode.ReadOnly, RandomAccessOperation.Read,
            1 << 12, UringDepth, sequential: false, hot, shortRun);
        return [new BenchResult(name, "iops", "IOPS", pool, "SharedStore io_uring qd32 buffered", uring)];
    }

    private static (string Path, long Size, TimeSpan Runtime) Prepare(BenchContext context)
    {
        Fio.EnsureInstalled(context.Log);
        long size = BenchFile.SizeFor(context.Scale);
        return (BenchFile.Ensure(size, context.Log), size, Runtime(context));
    }

    private static List<string> FioArgs(string path, long size, TimeSpan t, string engine, string rw, string bs, int depth, int jobs) =>
    [
        "--name=sharedstore-baseline", Fio.Arg("filename", path), Fio.Arg("ioengine", engine), "--direct=1",
        Fio.Arg("rw", rw), Fio.Arg("bs", bs), Fio.Arg("iodepth", depth), Fio.Arg("numjobs", jobs),
        Fio.Arg("size", size), "--time_based", Fio.Arg("runtime", $"{(int)t.TotalSeconds}s"), "--ramp_time=1s",
        "--randrepeat=0", "--norandommap", "--thread",
    ];

    private static double Measure(BenchContext context, IDeviceAccessScheduler scheduler, string path, DeviceMode mode,
        RandomAccessOperation op, int blockSize, int depth, bool sequential, long size, TimeSpan t)
    {
        using (scheduler)
        using (var device = new RandomAccessFileDevice(path, mode))
        {
            var loop = new QueueDepthLoop(scheduler, device, op, blockSize, depth, sequential, size);
            double rate = loop.Run(TimeSpan.FromSeconds(1), t);
            context.Log.WriteLine($"{scheduler.Kind} {op} bs={blockSize} qd={depth} {(sequential ? "seq" : "rand")}: {rate:F0} ops/s");
            return rate;
        }
    }
}
