using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using SharedStore.Devices;

namespace SharedStore.Bench.Devices;

/// <summary>
/// `--device-probe`: one queue-depth loop with explicit settings, for the investigation scripts beside this file
/// (they run it alternately with fio's variants). Prints one line: MB/s, IOPS, CPU per op, io-wq workers seen.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe class DeviceProbe
{
    public static int Run(string[] args)
    {
        string path = "";
        string rw = "write";
        int bs = 1 << 20, qd = 8, seconds = 3;
        string buffers = "malloc";
        string sched = "uring";
        bool direct = true;
        string batch = "adaptive";
        for (int i = 0; i < args.Length; i++)
        {
            string v = i + 1 < args.Length ? args[i + 1] : "";
            switch (args[i])
            {
                case "--file": path = v; i++; break;
                case "--rw": rw = v; i++; break;
                case "--bs": bs = int.Parse(v, CultureInfo.InvariantCulture); i++; break;
                case "--qd": qd = int.Parse(v, CultureInfo.InvariantCulture); i++; break;
                case "--seconds": seconds = int.Parse(v, CultureInfo.InvariantCulture); i++; break;
                case "--buffers": buffers = v; i++; break;
                case "--scheduler": sched = v; i++; break;
                case "--buffered": direct = false; break;
                case "--batch": batch = v; i++; break;
                default: Console.Error.WriteLine($"unknown probe option {args[i]}"); return 2;
            }
        }

        var op = rw.EndsWith("write", StringComparison.Ordinal) ? RandomAccessOperation.Write : RandomAccessOperation.Read;
        bool sequential = !rw.StartsWith("rand", StringComparison.Ordinal);
        DeviceMode mode = (direct ? DeviceMode.Direct : DeviceMode.None) | (op == RandomAccessOperation.Read ? DeviceMode.ReadOnly : DeviceMode.None);
        IDeviceAccessScheduler scheduler = sched == "pool" ? new ThreadPoolScheduler(qd) : new IoUringScheduler(64)
        {
            Batching = batch switch
            {
                "fixed" => IoUringScheduler.CompletionBatching.Fixed,
                "none" => IoUringScheduler.CompletionBatching.None,
                _ => IoUringScheduler.CompletionBatching.Adaptive,
            },
        };
        using var device = new RandomAccessFileDevice(path, mode);
        long size = device.Size;
        nint[] bufs = new nint[qd];
        DeviceBuffers? pool = null;
        if (buffers == "huge")
        {
            // The library's pool: 2 MiB-aligned, MADV_HUGEPAGE, populated.
            pool = new DeviceBuffers(bs, qd);
            for (int i = 0; i < qd; i++)
            {
                bufs[i] = pool[i];
                new Span<byte>((void*)bufs[i], bs).Fill((byte)i);
            }
        }
        else
        {
            for (int i = 0; i < qd; i++)
            {
                bufs[i] = (nint)NativeMemory.AlignedAlloc((nuint)bs, 4096);
                new Span<byte>((void*)bufs[i], bs).Fill((byte)i);
            }
        }

        double segments = bufs.Average(b => DeviceBuffers.PhysicalRuns(b, bs));
        int workers = 0;
        using var stop = new ManualResetEventSlim();
        var watcher = new Thread(() =>
        {
            while (!stop.Wait(200))
            {
                int n = 0;
                foreach (string t in Directory.EnumerateDirectories("/proc/self/task"))
                {
                    try
                    {
                        if (File.ReadAllText(Path.Combine(t, "comm")).StartsWith("iou-wrk", StringComparison.Ordinal))
                        {
                            n++;
                        }
                    }
                    catch (IOException)
                    {
                    }
                }

                workers = Math.Max(workers, n);
            }
        }) { IsBackground = true };
        watcher.Start();
        using (scheduler)
        {
            var loop = new QueueDepthLoop(scheduler, device, op, bs, qd, sequential, size);
            TimeSpan cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            double rate = loop.Run(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(seconds), bufs);
            TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
            stop.Set();
            watcher.Join();
            double perOp = cpu.TotalMicroseconds / (rate * (seconds + 1));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{rate * bs / 1e6:F0} MB/s {rate:F0} IOPS {perOp:F1} us-cpu/op iou-wrk={workers} phys-runs/buffer={segments:F1}"));
        }

        if (pool is not null)
        {
            pool.Dispose();
        }
        else
        {
            foreach (nint b in bufs)
            {
                NativeMemory.AlignedFree((void*)b);
            }
        }

        return 0;
    }
}
