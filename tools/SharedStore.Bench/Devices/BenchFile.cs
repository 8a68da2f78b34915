using System.Runtime.Versioning;
using System.Runtime.InteropServices;
using SharedStore.Devices;

namespace SharedStore.Bench.Devices;

/// <summary>
/// The device-bench data file: allocated with fallocate and then written in full, so reads hit real blocks rather
/// than unwritten extents (which ext4 answers with zeros without touching the disk). It lives under /var/tmp, not the
/// bench work directory, so it survives between runs: writing 2 GiB of new file space costs about 5 s here
/// (0.43 GB/s for first writes, MACHINE-FACTS §vi). /tmp may be tmpfs, where O_DIRECT fails.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe class BenchFile
{
    private const string Directory = "/var/tmp/sharedstore-bench";
    private const int Chunk = 1 << 20; // 1 MiB

    public static long SizeFor(double scale)
    {
        long size = (long)(2.0 * (1L << 30) * Math.Min(1.0, scale)); // 2 GiB at scale 1
        size = Math.Max(size, 256L << 20); // 256 MiB floor keeps random reads off a tiny hot set
        return size / Chunk * Chunk;
    }

    public static string Ensure(long size, TextWriter log)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string path = Path.Combine(Directory, $"devices-{size >> 20}m.dat");
        string marker = path + ".complete";
        if (File.Exists(marker) && new FileInfo(path).Length == size)
        {
            return path;
        }

        log.WriteLine($"creating {size >> 20} MiB bench file {path}");
        File.Delete(marker);
        using (var device = new RandomAccessFileDevice(path, DeviceMode.Create | DeviceMode.Truncate | DeviceMode.Direct))
        {
            SafeFd fd = device.FileHandle!;
            if (Interop.Libc.fallocate(fd.Fd, 0, 0, size) != 0)
            {
                throw Interop.Libc.Error("fallocate", Interop.Libc.LastErrno);
            }

            byte* buf = (byte*)NativeMemory.AlignedAlloc(Chunk, 4096);
            try
            {
                var rng = new Random(12345);
                rng.NextBytes(new Span<byte>(buf, Chunk));
                for (long off = 0; off < size; off += Chunk)
                {
                    *(long*)buf = off; // make every chunk distinct
                    TransferResult r = device.Transfer(RandomAccessOperation.Write, off, buf, Chunk);
                    if (!r.Succeeded)
                    {
                        throw new IOException($"writing the bench file failed: {r}");
                    }
                }
            }
            finally
            {
                NativeMemory.AlignedFree(buf);
            }

            device.Flush();
        }

        File.WriteAllText(marker, DateTime.UtcNow.ToString("O"));
        return path;
    }
}
