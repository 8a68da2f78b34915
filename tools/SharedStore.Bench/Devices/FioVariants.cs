using System.Globalization;
using System.Runtime.Versioning;

namespace SharedStore.Bench.Devices;

/// <summary>
/// One way of running the same fio job: extra options on top of the scenario's command. The device scenarios run
/// several and report SharedStore against (1) the variant whose settings match SharedStore's own, (2) the plain
/// command, and (3) the fastest variant of the run (issue 19: compare like for like, and show the best fio does).
/// </summary>
internal sealed record FioVariant(string Name, string[] Options, bool NeedsHugePages = false)
{
    /// <summary>The command as issued before issue 19: fio's buffers from malloc (4 KiB pages).</summary>
    public static FioVariant Plain { get; } = new("plain", []);

    /// <summary>Buffers in hugetlb huge pages: what SharedStore's <c>DeviceBuffers</c> gives (transparent huge pages).</summary>
    public static FioVariant HugePages { get; } = new("--iomem=shmhuge", ["--iomem=shmhuge"], NeedsHugePages: true);

    public static FioVariant FixedBuffers { get; } = new("--fixedbufs", ["--fixedbufs"]);

    public static FioVariant RegisteredFiles { get; } = new("--registerfiles", ["--registerfiles"]);

    public static FioVariant HugeFixedRegistered { get; } =
        new("--iomem=shmhuge --fixedbufs --registerfiles", ["--iomem=shmhuge", "--fixedbufs", "--registerfiles"], NeedsHugePages: true);
}

/// <summary>
/// Enough reserved huge pages (<c>vm.nr_hugepages</c>) for fio's <c>--iomem=shmhuge</c>, for the life of one scenario:
/// raised by what the scenario needs and put back on Dispose. Needs root; where the pages cannot be had,
/// <see cref="Available"/> is false and <see cref="Why"/> says why (the scenario then reports the plain command as its
/// matching baseline and names the reason). shmhuge, not mmaphuge: fio 3.33 corrupts its heap with
/// <c>--iomem=mmaphuge --thread --numjobs=8</c> (the psync baseline), and both give the same hugetlb memory.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class HugePageReserve : IDisposable
{
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";
    private readonly int _oldPages = -1;

    public HugePageReserve(int pages, TextWriter log)
    {
        try
        {
            _oldPages = int.Parse(File.ReadAllText(NrHugePages).Trim(), CultureInfo.InvariantCulture);
            int free = MemInfo("HugePages_Free");
            if (free < pages)
            {
                File.WriteAllText(NrHugePages, (_oldPages + pages - free).ToString(CultureInfo.InvariantCulture));
            }

            free = MemInfo("HugePages_Free");
            Available = free >= pages;
            Why = Available ? null : $"the kernel reserved only {free} of {pages} huge pages";
            log.WriteLine($"huge pages for fio: {free} free (nr_hugepages was {_oldPages})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Why = $"cannot reserve huge pages (needs root): {e.Message}";
        }
    }

    /// <summary>True when fio's shmhuge variants can run.</summary>
    public bool Available { get; }

    /// <summary>Why <see cref="Available"/> is false.</summary>
    public string? Why { get; }

    public void Dispose()
    {
        try
        {
            if (_oldPages >= 0)
            {
                File.WriteAllText(NrHugePages, _oldPages.ToString(CultureInfo.InvariantCulture));
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static int MemInfo(string key) =>
        int.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith(key + ":", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
}
