using System.Diagnostics;

namespace SharedStore.Bench;

/// <summary>
/// Synchronous-write figures that other scenarios compare against in the same run (the asynchronous write scenarios
/// report their ratio against <see cref="SyncWrite1MiBGBps(BenchContext, int)"/>). One write is 1 MiB
/// (<see cref="BufferSize"/>) from one source buffer, at offsets cycling through a 64 MiB object, so consecutive
/// writes take different blocks' locks and touch different destination pages, as a stream of writes would.
/// </summary>
internal static unsafe class WriteBaselines
{
    public const int BufferSize = 1 << 20; // 1 MiB
    public const long ObjectSize = 64L << 20; // 64 MiB
    public const int DefaultBlockSize = 1 << 20; // 1 MiB, the broker's default

    private const int Rounds = 15;
    private const int WarmupRounds = 2;

    /// <summary>Writes per round for this run: 256 (four passes over the object, 256 MiB), scaled by
    /// <c>--scale</c>, at least one pass.</summary>
    internal static int WritesPerRound(BenchContext context) =>
        Math.Max((int)(ObjectSize / BufferSize), (int)(256 * context.Scale));

    /// <summary>The <c>write-1mib</c> figure: GB/s of <c>SharedObject.Write</c> of 1 MiB buffers at offsets cycling
    /// through a 64 MiB object in a container of <paramref name="blockSize"/>-byte lock blocks; median of 13 rounds
    /// after 2 warm-up rounds. Starts (and stops) its own broker.</summary>
    internal static double SyncWrite1MiBGBps(BenchContext context, int blockSize = DefaultBlockSize)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-write-1mib", SharedStoreClient.ProcessGroupId, new ContainerOptions { BlockSize = blockSize });
        using var obj = con.CreateObject("w", ObjectSize);
        return SyncWrite1MiBGBps(obj, WritesPerRound(context));
    }

    /// <summary>The same figure on an object the caller already has (at least 1 MiB; offsets cycle through the whole
    /// 1 MiB multiples of its size), so a scenario can measure it beside its own figure on the same broker.</summary>
    internal static double SyncWrite1MiBGBps(SharedObject obj, int writesPerRound)
    {
        var (write, _) = Measure(obj, writesPerRound, withMemcpy: false);
        return write;
    }

    /// <summary>Median GB/s of the object write and (when <paramref name="withMemcpy"/>) of a plain copy of the same
    /// 1 MiB source to the same offsets of the same mapping, rounds interleaved so both see the same machine.</summary>
    internal static (double WriteGBps, double MemcpyGBps) Measure(SharedObject obj, int writesPerRound, bool withMemcpy)
    {
        long slots = obj.Size / BufferSize;
        if (slots < 1)
        {
            throw new ArgumentException($"the object has {obj.Size} bytes, fewer than one {BufferSize}-byte write", nameof(obj));
        }

        byte[] src = new byte[BufferSize];
        new Random(3).NextBytes(src);
        byte* data = (byte*)obj.GetAttributes().DataAddress;
        double bytes = (double)writesPerRound * BufferSize;
        var writes = new List<double>();
        var copies = new List<double>();
        for (int round = 0; round < Rounds; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < writesPerRound; i++)
            {
                obj.Write(i % slots * BufferSize, src);
            }

            writes.Add(bytes / Stats.Ns(Stopwatch.GetTimestamp() - t0));

            if (withMemcpy)
            {
                t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < writesPerRound; i++)
                {
                    src.CopyTo(new Span<byte>(data + (i % slots * BufferSize), BufferSize));
                }

                copies.Add(bytes / Stats.Ns(Stopwatch.GetTimestamp() - t0));
            }
        }

        return (Stats.Median(writes.Skip(WarmupRounds)), withMemcpy ? Stats.Median(copies.Skip(WarmupRounds)) : double.NaN);
    }
}

/// <summary>GB/s of synchronous 1 MiB writes cycling through a 64 MiB object, against memcpy of 1 MiB to the same
/// offsets of the same mapping.</summary>
internal sealed class Write1MiB : IScenario
{
    public string Name => "write-1mib";

    public string Description => "GB/s of object write of 1 MiB buffers cycling through a 64 MiB object (1 MiB blocks) vs memcpy of 1 MiB to the same offsets";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        var options = new ContainerOptions { BlockSize = WriteBaselines.DefaultBlockSize };
        using var con = client.CreateContainer("bench-write-1mib", SharedStoreClient.ProcessGroupId, options);
        using var obj = con.CreateObject("w", WriteBaselines.ObjectSize);
        var (write, memcpy) = WriteBaselines.Measure(obj, WriteBaselines.WritesPerRound(context), withMemcpy: true);
        return [new BenchResult(Name, "median", "GB/s", write, "memcpy-1mib", memcpy)];
    }
}
