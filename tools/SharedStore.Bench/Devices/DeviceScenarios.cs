using SharedStore.Bench.Devices;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static partial IEnumerable<IScenario> DeviceScenarios()
    {
        // The device library is Linux-only (io_uring, O_DIRECT, statx).
        if (!OperatingSystem.IsLinux())
        {
            return [];
        }

        return
        [
            new DeviceScenario("device-uring-randread-4k-direct",
                "io_uring scheduler, 4 KiB random O_DIRECT reads at QD32, IOPS vs fio io_uring QD32", DeviceBenchmarks.UringRandRead),
            new DeviceScenario("device-uring-seqwrite-1m",
                "io_uring scheduler, 1 MiB sequential O_DIRECT overwrites at QD8, MB/s vs fio io_uring QD8", DeviceBenchmarks.UringSeqWrite),
            new DeviceScenario("device-threadpool-randread-4k-direct",
                "thread-pool scheduler (8 threads), 4 KiB random O_DIRECT reads, IOPS vs fio psync numjobs=8", DeviceBenchmarks.ThreadPoolRandRead),
            new DeviceScenario("device-buffered-randread-4k-cached",
                "page-cache 4 KiB random reads: thread pool (2 threads) vs io_uring QD32 (the factory's buffered choice)", DeviceBenchmarks.BufferedRandRead),
            new DeviceScenario("device-scheduler-overhead-null",
                "null device, 4 KiB at QD32: thread pool (2 threads) vs io_uring, scheduler cost alone", DeviceBenchmarks.NullOverhead),
        ];
    }
}

/// <summary>A device scenario backed by a method of <see cref="DeviceBenchmarks"/>.</summary>
internal sealed class DeviceScenario(string name, string description, Func<BenchContext, IReadOnlyList<BenchResult>> run) : IScenario
{
    public string Name => name;

    public string Description => description;

    public IReadOnlyList<BenchResult> Run(BenchContext context) => run(context);
}
