using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// Builds schedulers, choosing io_uring or the thread pool by measurement and falling back to the thread pool where
/// io_uring is unavailable. The chosen scheduler's <see cref="IDeviceAccessScheduler.SelectionReason"/> says why.
/// </summary>
/// <remarks>
/// The per-mode choice of <see cref="DeviceSchedulerKind.Auto"/> follows the measurements in docs/DEVICES.md, taken
/// with tools/SharedStore.Bench on this 2-CPU machine: direct I/O goes to io_uring (one thread keeps a queue depth of
/// 32; fio parity). Buffered I/O also goes to io_uring: for 4 KiB page-cache hits the two-thread pool reached only
/// 0.78 to 0.88 of io_uring's IOPS here (the machine is shared and CPU-bound, and io_uring serves cached reads inline
/// in the submitting call on one thread). The expectation that threads win page-cache reads (MACHINE-FACTS section vi,
/// measured idle, in C) did not hold for this implementation under load; <see cref="s_bufferedKind"/> is the one place
/// to change if a re-measurement on idle hardware says otherwise.
/// </remarks>
[SupportedOSPlatform("linux")]
public static partial class DeviceSchedulers
{
    private static readonly Lazy<string?> s_ioUringUnavailable = new(IoUringScheduler.ProbeUnavailableReason);

    // Measured choice for buffered (page-cache) devices; see the remarks.
    private static readonly DeviceSchedulerKind s_bufferedKind = DeviceSchedulerKind.IoUring;

    /// <summary>Null when io_uring works here, else why not (probed once per process).</summary>
    public static string? IoUringUnavailableReason => s_ioUringUnavailable.Value;

    /// <summary>Creates a scheduler.</summary>
    /// <param name="kind">The implementation; <see cref="DeviceSchedulerKind.Auto"/> picks by <paramref name="mode"/>.</param>
    /// <param name="mode">The mode of the devices the scheduler will serve (only Direct matters).</param>
    /// <param name="threadCount">Thread-pool size when the thread pool is used (0 = default).</param>
    /// <param name="ringEntries">io_uring submission entries when io_uring is used.</param>
    /// <returns>The scheduler; the caller disposes it.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kind"/> is unknown or a size is out of range.</exception>
    public static IDeviceAccessScheduler Create(
        DeviceSchedulerKind kind = DeviceSchedulerKind.Auto,
        DeviceMode mode = DeviceMode.Direct,
        int threadCount = 0,
        int ringEntries = 256) =>
        CreateCore(kind, mode, threadCount, ringEntries, static () => IoUringUnavailableReason);

    private static IDeviceAccessScheduler CreateCore(DeviceSchedulerKind kind, DeviceMode mode, int threadCount, int ringEntries,
        Func<string?> probe)
    {
        string why;
        switch (kind)
        {
            case DeviceSchedulerKind.ThreadPool:
                return new ThreadPoolScheduler(threadCount) { SelectionReason = "thread pool requested" };
            case DeviceSchedulerKind.IoUring:
                why = "io_uring requested";
                break;
            case DeviceSchedulerKind.Auto:
                if ((mode & DeviceMode.Direct) == 0)
                {
                    if (s_bufferedKind == DeviceSchedulerKind.ThreadPool)
                    {
                        return new ThreadPoolScheduler(threadCount)
                        {
                            SelectionReason = "thread pool chosen for buffered I/O (docs/DEVICES.md)",
                        };
                    }

                    why = "io_uring chosen for buffered I/O: page-cache hits measured 1.1-1.3x the thread pool's IOPS here (docs/DEVICES.md)";
                    break;
                }

                why = "io_uring chosen for direct I/O: one thread keeps a deep queue, at parity with fio (docs/DEVICES.md)";
                break;
            default:
                DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(kind), kind, "Unknown scheduler kind.");
                return null;
        }

        string? unavailable = probe();
        if (unavailable is null)
        {
            try
            {
                return new IoUringScheduler(ringEntries) { SelectionReason = why };
            }
            catch (DeviceException e)
            {
                unavailable = e.Message;
            }
        }

        return new ThreadPoolScheduler(threadCount)
        {
            SelectionReason = $"fell back to the thread pool: {unavailable}",
        };
    }
}
