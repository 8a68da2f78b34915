using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using SharedStore.Devices;
using SharedStore.Regions;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static IEnumerable<IScenario> DurableScenarios()
    {
        // Durable containers write through the device library (io_uring, fdatasync): Linux only.
        if (!OperatingSystem.IsLinux())
        {
            return [];
        }

        return [new DurableWriteBack(), new DurableRestore1GiB()];
    }
}

/// <summary>
/// Shared pieces of the durable scenarios. Their files live under /var/tmp/sharedstore-bench (a real disk: /tmp may
/// be tmpfs, where fdatasync costs nothing), one directory per scenario and process, removed at the end; the broker's
/// own state directory (its list of durable containers) is private to each scenario, so no other broker of the run
/// restores these containers.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe class DurableBench
{
    public const int Chunk = 1 << 20; // 1 MiB: the baselines' transfer size and the containers' (default) block size

    /// <summary>The write-back's depth (DurableStore writes back 32 blocks per batch), used by both baselines.</summary>
    public const int Depth = 32;

    private const string Root = "/var/tmp/sharedstore-bench";

    /// <summary>A fresh directory for one scenario, with an empty <c>store</c> directory for the container.</summary>
    public static string ScenarioDirectory(string scenario)
    {
        string dir = Path.Combine(Root, $"{scenario}-{Environment.ProcessId}");
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }

        Directory.CreateDirectory(Path.Combine(dir, "store"));
        return dir;
    }

    public static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>A broker with its own state directory, logging at Debug so that its "configuration loaded" line (the
    /// first it writes once the host is built) can be read as the start of its own work.</summary>
    public static BenchBroker StartBroker(BenchContext context, string stateDirectory) =>
        new(context, "--state-dir", stateDirectory, "--log-level", "Debug");

    /// <summary>Fills <paramref name="buffer"/> with 1 MiB of random bytes repeated, each MiB stamped with its index
    /// and <paramref name="version"/> in its first 16 bytes, so every block holds distinct, checkable contents.</summary>
    public static void Fill(byte* buffer, long size, long version)
    {
        var pattern = new byte[Chunk];
        new Random(17).NextBytes(pattern);
        for (long off = 0; off < size; off += Chunk)
        {
            int n = (int)Math.Min(Chunk, size - off);
            pattern.AsSpan(0, n).CopyTo(new Span<byte>(buffer + off, n));
            Stamp(buffer + off, off / Chunk, version);
        }
    }

    public static void Stamp(byte* block, long index, long version)
    {
        ((long*)block)[0] = index;
        ((long*)block)[1] = version;
    }

    /// <summary>Blocks of <paramref name="obj"/> whose dirty mark is set (read from the lock records directly).</summary>
    public static long CountDirty(SharedObject obj, long blocks)
    {
        long n = 0;
        for (long b = 0; b < blocks; b++)
        {
            if ((Volatile.Read(ref obj.LockRecord(b)->Flags) & BlockLockDescriptor.FlagDirty) != 0)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>Creates <paramref name="path"/> with fallocate, as the broker creates an object's file.</summary>
    public static void Allocate(string path, long size)
    {
        using var device = new RandomAccessFileDevice(path, DeviceMode.Create | DeviceMode.Truncate);
        if (Interop.Libc.fallocate(device.FileHandle!.Fd, 0, 0, size) != 0)
        {
            throw Interop.Libc.Error("fallocate", Interop.Libc.LastErrno);
        }
    }

    /// <summary>
    /// Seconds to transfer [0, <paramref name="bytes"/>) of <paramref name="path"/> sequentially in 1 MiB requests,
    /// <see cref="Depth"/> in flight, through <c>DeviceSchedulers.Create(Auto, DeviceMode.None)</c> on a buffered
    /// device: the scheduler and open mode the broker's DurableStore uses. A write is followed by fdatasync, inside
    /// the timed part, as a flush ends with one. Scheduler, device and buffers are set up before the clock starts.
    /// <paramref name="writeOut"/>: after every <see cref="Depth"/> completed writes, start writing the last
    /// <see cref="Depth"/> MiB out (posix_fadvise DONTNEED), as DurableStore's write-back does after each batch.
    /// <paramref name="direct"/>: the device opened with O_DIRECT (no page cache), as the write-back writes whole slots.
    /// </summary>
    public static double SequentialTransfer(string path, RandomAccessOperation op, long bytes, bool writeOut = false, bool direct = false)
    {
        DeviceMode mode = direct ? DeviceMode.Direct : DeviceMode.None;
        using var scheduler = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, mode);
        using var device = new RandomAccessFileDevice(path, mode);
        var buffers = new nint[Depth];
        try
        {
            for (int i = 0; i < Depth; i++)
            {
                buffers[i] = (nint)NativeMemory.AlignedAlloc(Chunk, 4096);
                new Random(i).NextBytes(new Span<byte>((void*)buffers[i], Chunk));
            }

            long next = 0;
            long completed = 0;
            int active = 0;
            string? failed = null;
            using var done = new ManualResetEventSlim();

            void Completed(RandomAccessRequestBinding binding, TransferResult r)
            {
                if (!r.Succeeded || r.BytesTransferred != binding.Length)
                {
                    failed ??= $"{op} of {binding.Length} bytes at {binding.DeviceOffset}: {r.Status} {r.BytesTransferred}";
                }

                long n = Interlocked.Increment(ref completed);
                if (writeOut && n % Depth == 0)
                {
                    _ = Interop.Libc.posix_fadvise(device.FileHandle!.Fd, (n - Depth) * Chunk, (long)Depth * Chunk, Interop.Libc.POSIX_FADV_DONTNEED);
                }

                long off = Interlocked.Add(ref next, Chunk) - Chunk;
                if (off < bytes)
                {
                    // Each request is rescheduled by its own completion: one in flight per request, Depth in all.
                    binding.Request!.Offset = off;
                    scheduler.Schedule(binding.Request);
                }
                else if (Interlocked.Decrement(ref active) == 0)
                {
                    done.Set();
                }
            }

            var requests = new List<RandomAccessRequest>();
            for (int i = 0; i < Depth && (long)i * Chunk < bytes; i++)
            {
                var r = new RandomAccessRequest(device, op, 0);
                r.Add(new RandomAccessRequestBinding(buffers[i], Chunk, Completed));
                requests.Add(r);
            }

            active = requests.Count;
            long t0 = Stopwatch.GetTimestamp();
            foreach (var r in requests)
            {
                r.Offset = Interlocked.Add(ref next, Chunk) - Chunk;
                scheduler.Schedule(r);
            }

            if (!done.Wait(TimeSpan.FromMinutes(5)))
            {
                throw new TimeoutException($"sequential {op} of {bytes} bytes did not finish");
            }

            if (op == RandomAccessOperation.Write)
            {
                device.Flush();
            }

            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            return failed is null ? seconds : throw new IOException(failed);
        }
        finally
        {
            foreach (nint b in buffers)
            {
                if (b != 0)
                {
                    NativeMemory.AlignedFree((void*)b);
                }
            }
        }
    }

    /// <summary>
    /// Touches and frees 2 GiB of anonymous memory, so that the next large allocation (page cache, an object's
    /// memory) gets pages the hypervisor backs. This VM reports free memory to its host (virtio-balloon free page
    /// reporting, about 2 s after it is freed), and a page the host took back costs a host fault at its next use: a
    /// cold 1 GiB read that drew such pages for its page cache took 1.5-2.4 s against 0.5-0.58 s right after this
    /// (same file, same run). Before this, whichever side followed the kill of a broker with a 1 GiB object lost.
    /// </summary>
    public static void BackFreeMemory()
    {
        const long Bytes = 2L << 30;
        nint p = Interop.Libc.mmap(0, (nuint)Bytes, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS, -1, 0);
        if (p == Interop.Libc.MAP_FAILED)
        {
            return; // only a fairness aid
        }

        for (long off = 0; off < Bytes; off += 4096)
        {
            ((byte*)p)[off] = 1;
        }

        _ = Interop.Libc.munmap(p, (nuint)Bytes);
    }

    /// <summary>Writes dirty pages out and drops the whole page cache (needs root), so the next read comes from the
    /// disk. It is machine-wide: other processes' cached files are dropped too. Then <see cref="BackFreeMemory"/>.</summary>
    public static void DropPageCache()
    {
        using (var sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false })!)
        {
            sync.WaitForExit();
        }

        try
        {
            File.WriteAllText("/proc/sys/vm/drop_caches", "3\n");
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new InvalidOperationException($"dropping the page cache needs root ({e.Message}); the cold-read figures would be cache hits", e);
        }

        BackFreeMemory();
    }

    /// <summary>Milliseconds between two of the broker's log lines, found by their event ids ("[10]": configuration
    /// loaded; "[1]": listening), from the timestamps the broker wrote (ms resolution, the clock of the broker).</summary>
    public static double LogIntervalMs(BenchBroker broker, string fromEvent, string toEvent)
    {
        var lines = broker.LogLines();
        for (int wait = 0; wait < 200 && !lines.Any(l => l.Contains(toEvent, StringComparison.Ordinal)); wait++)
        {
            Thread.Sleep(10); // stderr is read asynchronously
            lines = broker.LogLines();
        }

        return (Time(lines, toEvent) - Time(lines, fromEvent)).TotalMilliseconds;
    }

    private static DateTimeOffset Time(string[] lines, string eventTag)
    {
        // "2026-11-21T20:54:45.749Z dbug: SharedStore.Broker.BrokerServer[10] socket …"
        string line = lines.FirstOrDefault(l => l.Contains(eventTag + " ", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"the broker did not log {eventTag}:\n{string.Join('\n', lines)}");
        return DateTimeOffset.ParseExact(line[..line.IndexOf(' ', StringComparison.Ordinal)], "yyyy-MM-dd'T'HH:mm:ss.fff'Z'",
            CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
    }
}

/// <summary>
/// GB/s of dirty data written back: a durable object (1 GiB; 512 MiB below scale 1) is written whole with one
/// synchronous Write (untimed; it holds every block's write lock until the copy is done, so the background write-back,
/// which skips locked blocks, cannot take any before the timed part), then container.Flush is timed: every block
/// written back into its other shadow slot (header + data, scatter/gather) and fdatasynced. Baseline, alternating
/// round by round: the same bytes written sequentially in 1 MiB requests at QD32 through the same scheduler kind and
/// open mode to a file on the same file system, then fdatasync. Two untimed rounds first: the object's file is
/// fallocated, and the first write of each shadow slot also converts unwritten extents (the baseline file is written
/// once untimed too). A second row, for reference, sets the write-back against the same baseline given the early
/// write-out the write-back starts after each batch (posix_fadvise DONTNEED per 32 MiB): the target applies to the first.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class DurableWriteBack : IScenario
{
    public string Name => "durable-writeback";

    public string Description => "GB/s of container.Flush writing back a wholly dirty 1 GiB durable object (ext4 under /var/tmp) vs 1 MiB sequential writes at QD32 + fdatasync through the device scheduler";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        long size = context.Scale < 1 ? 512L << 20 : 1L << 30;
        int rounds = context.Scale < 1 ? 3 : 5;
        string dir = DurableBench.ScenarioDirectory(Name);
        byte* src = (byte*)NativeMemory.AlignedAlloc((nuint)size, 4096);
        try
        {
            using var broker = DurableBench.StartBroker(context, Path.Combine(context.WorkDirectory, "state-" + Name));
            using var client = broker.Connect();
            using var con = client.CreateContainer("bench-durable-wb", SharedStoreClient.ProcessGroupId,
                new ContainerOptions { DurablePath = Path.Combine(dir, "store") });
            using var obj = con.CreateObject("o", size);
            long blocks = (size + con.BlockSize - 1) / con.BlockSize;
            DurableBench.Fill(src, size, 0);

            string baselinePath = Path.Combine(dir, "baseline.dat");
            DurableBench.Allocate(baselinePath, size);
            double first = DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Write, size);
            context.Log.WriteLine($"  warm-up baseline (first write of the fallocated file): {size / first / 1e9:F2} GB/s");

            var durable = new List<double>();
            var baseline = new List<double>();
            var writeOut = new List<double>();
            var direct = new List<double>();
            for (int round = -2; round < rounds; round++)
            {
                // Sides alternate (baselines first in even rounds, last in odd ones): what a burst of writes leaves to
                // the disk and the host behind it must not always fall on the same side.
                if (round >= 0 && round % 2 == 0)
                {
                    Baselines();
                }

                for (long b = 0; b < blocks; b++)
                {
                    DurableBench.Stamp(src + (b * con.BlockSize), b, round + 3);
                }

                DurableBench.BackFreeMemory(); // before the write: the write-back thread would take blocks dirtied earlier
                obj.Write(0, new ReadOnlySpan<byte>(src, (int)size));
                long dirty = DurableBench.CountDirty(obj, blocks);
                long t0 = Stopwatch.GetTimestamp();
                con.Flush(TimeSpan.FromMinutes(5));
                double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                long left = DurableBench.CountDirty(obj, blocks);
                if (left != 0)
                {
                    throw new InvalidOperationException($"{left} blocks are still dirty after the flush");
                }

                double gbps = size / seconds / 1e9;
                if (round < 0)
                {
                    context.Log.WriteLine($"  warm-up {round + 3} (first write of shadow slot {round + 2}): {gbps:F2} GB/s, {dirty}/{blocks} blocks dirty before the flush");
                    continue;
                }

                if (round % 2 == 1)
                {
                    Baselines();
                }

                durable.Add(gbps);
                context.Log.WriteLine($"  round {round + 1}: write-back {gbps:F2} GB/s ({seconds * 1e3:F0} ms, {dirty}/{blocks} blocks dirty before the flush), " +
                    $"baseline {baseline[^1]:F2} GB/s, baseline with early write-out {writeOut[^1]:F2} GB/s, baseline with O_DIRECT {direct[^1]:F2} GB/s");
            }

            void Baselines()
            {
                DurableBench.BackFreeMemory();
                baseline.Add(size / DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Write, size) / 1e9);
                DurableBench.BackFreeMemory();
                writeOut.Add(size / DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Write, size, writeOut: true) / 1e9);
                DurableBench.BackFreeMemory();
                direct.Add(size / DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Write, size, direct: true) / 1e9);
            }

            // The other rows are for reference: the same baseline given the early write-out the buffered write-back
            // used, and with O_DIRECT, which the write-back uses for whole slots.
            return
            [
                new BenchResult(Name, "median", "GB/s", Stats.Median(durable), "seqwrite-1m-qd32-fdatasync", Stats.Median(baseline)),
                new BenchResult(Name, "median", "GB/s", Stats.Median(durable), "seqwrite-1m-qd32-writeout", Stats.Median(writeOut)),
                new BenchResult(Name, "median", "GB/s", Stats.Median(durable), "seqwrite-1m-qd32-direct", Stats.Median(direct)),
            ];
        }
        finally
        {
            NativeMemory.AlignedFree(src);
            DurableBench.TryDelete(dir);
        }
    }
}

/// <summary>
/// Seconds to restore a 1 GiB durable object at broker start. The object is written and flushed twice (so both
/// shadow slots of every block hold a valid copy and restore has to choose), then the broker is killed with -9 and
/// the whole page cache dropped (<c>sync; echo 3 &gt; /proc/sys/vm/drop_caches</c>, root) before each measurement.
/// <para>The figure is what the broker itself spends: the interval between its "configuration loaded" and
/// "listening" log lines (its own timestamps) when it restores the object, minus the same interval of a broker with
/// no durable container started right after on a cold cache too. That interval covers everything between the built
/// host and the listening socket (broker state, DurableStore and its io_uring ring, the instance lock, restore), so
/// the difference is the restore: reserving the object's memory, reading every slot header and the chosen slots,
/// checking the checksums. A client joins the object once the broker listens: restored containers come back before
/// the socket is bound. Process start and host build (runtime, assemblies from a cold cache) are left out on both
/// sides; the spawn-to-joined times are logged beside it.</para>
/// Baseline: 1 GiB read sequentially in 1 MiB requests at QD32 through the same scheduler kind and open mode, from a
/// cold cache, from a file on the same file system. A warm-up round (both sides, not counted), then 3 rounds (2 below
/// scale 1) whose sides alternate in order; medians.
/// <para>"Cold" is the guest's page cache. This VM's disk is a file on its host, whose cache the guest cannot drop:
/// unprimed, the same 1 GiB read took 0.45 s when its file had been read last and 2-3 s when the durable file had
/// (the host keeps roughly one of the two), so each side's figure depended on the order. Each side therefore runs
/// twice and counts the second run, whose reads the first put in the host's cache: both sides are measured guest-cold,
/// host-warm. Each also starts with hypervisor-backed free memory (<see cref="DurableBench.BackFreeMemory"/>).</para>
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class DurableRestore1GiB : IScenario
{
    public string Name => "durable-restore-1gib";

    public string Description => "s to restore a 1 GiB durable object at broker start (broker's own log timestamps, minus an empty broker's; page cache dropped: needs root) vs a cold 1 GiB sequential read, 1 MiB at QD32, through the device scheduler";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        const long Size = 1L << 30;
        const string Configured = "[10]";
        const string Listening = "[1]";
        int rounds = context.Scale < 1 ? 2 : 3;
        string dir = DurableBench.ScenarioDirectory(Name);
        string state = Path.Combine(context.WorkDirectory, "state-" + Name);
        byte* src = (byte*)NativeMemory.AlignedAlloc((nuint)Size, 4096);
        BenchBroker? broker = null;
        try
        {
            broker = DurableBench.StartBroker(context, state);
            long blockSize;
            using (var client = broker.Connect())
            {
                var con = client.CreateContainer("bench-durable-restore", SharedStoreClient.ProcessGroupId,
                    new ContainerOptions { DurablePath = Path.Combine(dir, "store") });
                var obj = con.CreateObject("o", Size);
                blockSize = con.BlockSize;
                for (long version = 1; version <= 2; version++)
                {
                    DurableBench.Fill(src, Size, version);
                    obj.Write(0, new ReadOnlySpan<byte>(src, (int)Size));
                    con.Flush(TimeSpan.FromMinutes(5));
                }
            }

            broker.Kill();

            string baselinePath = Path.Combine(dir, "baseline.dat");
            DurableBench.Allocate(baselinePath, Size);
            _ = DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Write, Size);

            var restore = new List<double>();
            var baseline = new List<double>();

            // Round 0 is a warm-up, logged and not counted; the sides alternate in order.
            for (int round = 0; round <= rounds; round++)
            {
                double read = 0, withMs = 0, joinedMs = 0;
                for (int side = 0; side < 2; side++)
                {
                    if ((side == 0) == (round % 2 == 1))
                    {
                        read = ColdRead();
                    }
                    else
                    {
                        (withMs, joinedMs) = Restore();
                    }
                }

                DurableBench.DropPageCache();
                double emptyMs, emptyStartMs;
                using (var empty = DurableBench.StartBroker(context, state + "-empty"))
                {
                    emptyMs = DurableBench.LogIntervalMs(empty, Configured, Listening);
                    emptyStartMs = empty.StartTime.TotalMilliseconds;
                }

                double seconds = (withMs - emptyMs) / 1e3;
                if (round > 0)
                {
                    restore.Add(seconds);
                    baseline.Add(read);
                }

                context.Log.WriteLine($"  {(round == 0 ? "warm-up" : $"round {round}")}: restore {seconds:F3} s (configured→listening {withMs:F0} ms, empty broker {emptyMs:F0} ms; " +
                    $"spawn→joined {joinedMs:F0} ms, empty spawn→listening {emptyStartMs:F0} ms), baseline cold read {read:F3} s ({Size / read / 1e9:F2} GB/s)");
                foreach (string line in broker.LogLines().Where(l => l.Contains("[12]", StringComparison.Ordinal) || l.Contains("[13]", StringComparison.Ordinal)))
                {
                    context.Log.WriteLine($"    broker: {line}");
                }
            }

            // Each side runs twice and counts the second: the first fills the host's cache of exactly what the second
            // reads (see the class comment).
            double ColdRead()
            {
                DurableBench.DropPageCache();
                _ = DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Read, Size);
                DurableBench.DropPageCache();
                return DurableBench.SequentialTransfer(baselinePath, RandomAccessOperation.Read, Size);
            }

            (double WithMs, double JoinedMs) Restore()
            {
                double withMs = 0, joinedMs = 0;
                for (int k = 0; k < 2; k++)
                {
                    DurableBench.DropPageCache();
                    long t0 = Stopwatch.GetTimestamp();
                    var restarted = broker!.StartAgain();
                    broker.Dispose();
                    broker = restarted;
                    withMs = DurableBench.LogIntervalMs(broker, Configured, Listening);
                    using (var client = broker.Connect())
                    {
                        var con = client.JoinContainer("bench-durable-restore");
                        var obj = con.JoinObject("o");
                        joinedMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                        if (k == 1)
                        {
                            Verify(obj, Size, blockSize, src);
                        }
                    }

                    broker.Kill();
                }

                return (withMs, joinedMs);
            }

            return [new BenchResult(Name, "median", "s", Stats.Median(restore), "seqread-1gib-qd32-cold", Stats.Median(baseline))];
        }
        finally
        {
            broker?.Dispose();
            NativeMemory.AlignedFree(src);
            DurableBench.TryDelete(dir);
        }
    }

    /// <summary>Every byte came back as last flushed, and no block is reported torn (untimed).</summary>
    private static void Verify(SharedObject obj, long size, long blockSize, byte* expected)
    {
        for (long off = 0; off < size; off += blockSize)
        {
            int n = (int)Math.Min(blockSize, size - off);
            using var lease = obj.Get(off, n);
            if (lease.Torn || !lease.Span.SequenceEqual(new ReadOnlySpan<byte>(expected + off, n)))
            {
                throw new InvalidOperationException($"the restored block at {off} differs from the flushed one (torn: {lease.Torn})");
            }
        }
    }
}
