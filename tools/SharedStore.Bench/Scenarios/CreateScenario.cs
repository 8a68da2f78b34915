using System.Diagnostics;
using System.Globalization;
using SharedStore.Regions;

namespace SharedStore.Bench;

/// <summary>ms per object_create until the object is fully usable by its creator (reserved, zeroed, and present in
/// the creator's page tables: touching every page then faults none in), against what the kernel's own fast path does
/// with a fresh memfd in this process: <c>fallocate</c> + <c>mmap(MAP_POPULATE)</c>. Rounds alternate the two sides;
/// the first round of each is dropped. Untimed after each create, every page of the object is touched and the
/// minor faults counted (second row: faults per page, which must stay near 0 for the figure to be honest).</summary>
internal sealed unsafe class CreateCost(string name, long size) : IScenario
{
    private const int Rounds = 7;

    private readonly string _baseline = $"memfd-populate-{(size >= 1L << 30 ? $"{size >> 30}gib" : $"{size >> 20}mib")}";

    public string Name => name;

    public string Description => $"ms per object_create of {size >> 20} MiB until its creator can touch every page without a fault vs fallocate + MAP_POPULATE of a fresh memfd";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-create", SharedStoreClient.ProcessGroupId);
        var create = new List<double>();
        var populate = new List<double>();
        var createFaults = new List<double>();
        var populateFaults = new List<double>();
        for (int i = 0; i < Rounds; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            var o = con.CreateObject($"o{i}", size);
            create.Add(Ms(t0));
            createFaults.Add(FaultsPerPageTouching((byte*)o.GetAttributes().DataAddress, size));
            o.Destroy();

            t0 = Stopwatch.GetTimestamp();
            var (fd, p) = MemfdPopulate(size);
            populate.Add(Ms(t0));
            populateFaults.Add(FaultsPerPageTouching((byte*)p, size));
            Interop.Libc.munmap(p, (nuint)size);
            fd.Dispose();
        }

        return
        [
            new BenchResult(Name, "median", "ms", Stats.Median(create.Skip(1)), _baseline, Stats.Median(populate.Skip(1))),
            new BenchResult(Name + "-faults", "faults per page touched after", "faults/page", createFaults.Skip(1).Max(), _baseline, populateFaults.Skip(1).Max()),
        ];
    }

    private static double Ms(long t0) => (Stopwatch.GetTimestamp() - t0) * 1000.0 / Stopwatch.Frequency;

    /// <summary>The baseline: a fresh memfd, its pages allocated, mapped with MAP_POPULATE (allocated, zeroed, mapped).</summary>
    private static (SafeFd Fd, nint Pointer) MemfdPopulate(long size)
    {
        int fd = Interop.Libc.memfd_create("bench-populate", Interop.Libc.MFD_CLOEXEC);
        var handle = new SafeFd(fd);
        if (fd < 0 || Interop.Libc.ftruncate(fd, size) != 0 || Interop.Libc.fallocate(fd, 0, 0, size) != 0)
        {
            throw new InvalidOperationException($"memfd baseline failed: errno {Interop.Libc.LastErrno}");
        }

        nint p = Interop.Libc.mmap(0, (nuint)size, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_SHARED | Interop.Libc.MAP_POPULATE, fd, 0);
        if (p == Interop.Libc.MAP_FAILED)
        {
            throw new InvalidOperationException($"mmap failed: errno {Interop.Libc.LastErrno}");
        }

        return (handle, p);
    }

    /// <summary>Writes one byte of every page and returns the minor faults this process took meanwhile, per page.</summary>
    private static double FaultsPerPageTouching(byte* p, long size)
    {
        long before = MinorFaults();
        for (long off = 0; off < size; off += 4096)
        {
            p[off] = 1;
        }

        return (MinorFaults() - before) / (double)(size / 4096);
    }

    /// <summary>minflt of this process (/proc/self/stat, field 10).</summary>
    internal static long MinorFaults()
    {
        string stat = File.ReadAllText("/proc/self/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture); // field 10 counted from the state (field 3)
    }
}

/// <summary>create-100k, destroy-100k and container-destroy-100k: n = 100 000 objects of 1 KiB (scaled) in one
/// container, made and destroyed one by one by one client, and a container holding n objects destroyed at once.
/// Baselines, same run: the first 1 000 creates (destroys) extrapolated to n, and the container destroy of a
/// container holding 1 000 objects times n / 1 000. Linear scaling means ratio 1. A second row each for create and
/// destroy compares the last 1 000 with the first 1 000 (less sensitive to one load spike than the extrapolation, and
/// what grows when a per-object step scans what exists).</summary>
internal sealed class ManyObjects : IScenario
{
    private const int First = 1000;
    private const long ObjectSize = 1024;

    public string Name => "create-100k";

    public string Description => "ms to create (then destroy one by one) 100 000 objects of 1 KiB in one container, and to destroy a container holding them, vs the first 1 000 (or a 1 000-object container) extrapolated";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        int n = Math.Max(10 * First, (int)(100_000 * context.Scale));
        string label = n % 1000 == 0 ? $"{n / 1000}k" : n.ToString(CultureInfo.InvariantCulture);
        double scale = n / (double)First;
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();

        // Baseline of the container destroy: a container holding First objects.
        var small = client.CreateContainer("bench-many-small", SharedStoreClient.ProcessGroupId);
        for (int i = 0; i < First; i++)
        {
            small.CreateObject($"o{i}", ObjectSize);
        }

        long t0 = Stopwatch.GetTimestamp();
        small.Destroy();
        double destroySmallContainer = Ms(t0);

        // Creates one by one, then destroys one by one (in creation order).
        var con = client.CreateContainer("bench-many", SharedStoreClient.ProcessGroupId);
        var objects = new SharedObject[n];
        t0 = Stopwatch.GetTimestamp();
        double create1k = 0, createBeforeLast1k = 0;
        for (int i = 0; i < n; i++)
        {
            objects[i] = con.CreateObject($"o{i}", ObjectSize);
            if (i == First - 1)
            {
                create1k = Ms(t0);
            }
            else if (i == n - First - 1)
            {
                createBeforeLast1k = Ms(t0);
            }
        }

        double createAll = Ms(t0);
        t0 = Stopwatch.GetTimestamp();
        double destroy1k = 0, destroyBeforeLast1k = 0;
        for (int i = 0; i < n; i++)
        {
            objects[i].Destroy();
            if (i == First - 1)
            {
                destroy1k = Ms(t0);
            }
            else if (i == n - First - 1)
            {
                destroyBeforeLast1k = Ms(t0);
            }
        }

        double destroyAll = Ms(t0);

        // The container destroy of a container holding n objects.
        for (int i = 0; i < n; i++)
        {
            objects[i] = con.CreateObject($"p{i}", ObjectSize);
        }

        t0 = Stopwatch.GetTimestamp();
        con.Destroy();
        double destroyContainer = Ms(t0);
        return
        [
            new BenchResult($"create-{label}", "total", "ms", createAll, $"create-1k-x{scale:0.#}", create1k * scale),
            new BenchResult($"create-{label}", "per object", "us", createAll * 1000 / n, "create-1k per object", create1k * 1000 / First),
            new BenchResult($"create-{label}", "last 1k", "ms", createAll - createBeforeLast1k, "first 1k", create1k),
            new BenchResult($"destroy-{label}", "total", "ms", destroyAll, $"destroy-1k-x{scale:0.#}", destroy1k * scale),
            new BenchResult($"destroy-{label}", "last 1k", "ms", destroyAll - destroyBeforeLast1k, "first 1k", destroy1k),
            new BenchResult($"container-destroy-{label}", "total", "ms", destroyContainer, $"container-destroy-1k-x{scale:0.#}", destroySmallContainer * scale),
        ];
    }

    private static double Ms(long t0) => (Stopwatch.GetTimestamp() - t0) * 1000.0 / Stopwatch.Frequency;
}
