using System.Diagnostics;

namespace SharedStore.Bench;

/// <summary>ms per object_create (reserve + populate) and per first join (client page tables), against first-touching
/// the same number of fresh anonymous pages in this process.</summary>
internal sealed unsafe class CreateCost(string name, long size) : IScenario
{
    public string Name => name;

    public string Description => $"ms per object_create of {size >> 20} MiB (memory reserved and populated) vs first touch of as much fresh memory";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-create", SharedStoreClient.ProcessGroupId);
        var create = new List<double>();
        var touch = new List<double>();
        for (int i = 0; i < 7; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            var o = con.CreateObject($"o{i}", size);
            create.Add((Stopwatch.GetTimestamp() - t0) * 1000.0 / Stopwatch.Frequency);
            o.Destroy();

            nint p = Interop.Libc.mmap(0, (nuint)size, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_SHARED | Interop.Libc.MAP_ANONYMOUS, -1, 0);
            t0 = Stopwatch.GetTimestamp();
            for (long off = 0; off < size; off += 4096)
            {
                ((byte*)p)[off] = 1;
            }

            touch.Add((Stopwatch.GetTimestamp() - t0) * 1000.0 / Stopwatch.Frequency);
            Interop.Libc.munmap(p, (nuint)size);
        }

        return [new BenchResult(Name, "median", "ms", Stats.Median(create.Skip(1)), "first-touch", Stats.Median(touch.Skip(1)))];
    }
}
