using System.Diagnostics;
using System.Runtime.InteropServices;
using SharedStore;

// The seed's reader/writer example as two real processes.
//   ReaderWriter [--keep]             launcher: ensures a broker runs, starts a writer and a reader, exits 0 iff the data
//                                     verified; --keep leaves the container and its object for `sharedstore ls`/`get`
//   ReaderWriter writer NAME MiB [keep] create container NAME, object "A", write a checksummed payload, destroy both
//   ReaderWriter reader NAME          wait for container NAME, get+put object "A", verify the checksum, leave
try
{
    return args.Length == 0 || args[0] == "--keep" ? Launcher.Run(keep: args.Length > 0) : args[0] switch
    {
        "writer" => Roles.Writer(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), keep: args.Length > 3 && args[3] == "keep"),
        "reader" => Roles.Reader(args[1]),
        _ => Usage(),
    };
}
catch (SharedStoreException e)
{
    // A clean report of what went wrong (a broker that could not start says why in the message), not a stack trace.
    Console.Error.WriteLine($"ReaderWriter: {e.Code}: {e.Message}");
    return 1;
}

static int Usage()
{
    Console.Error.WriteLine("usage: ReaderWriter [--keep | writer NAME MIB [keep] | reader NAME]");
    return 2;
}

internal static class Launcher
{
    public static int Run(bool keep)
    {
        const int PayloadMiB = 64;
        string name = $"readerwriter-{Environment.ProcessId}";

        // Start the broker in the background if none is running (it stays up for the next run).
        using (var probe = SharedStoreClient.Connect(new SharedStoreClientOptions { StartBrokerIfMissing = true }))
        {
            Console.WriteLine($"[launcher] broker pid {probe.BrokerPid} at {probe.SocketPath}");
        }

        using var reader = Child("reader", name);
        using var writer = Child("writer", name, PayloadMiB.ToString(System.Globalization.CultureInfo.InvariantCulture), keep ? "keep" : "destroy");
        var both = Task.WhenAll(Pump(writer, "writer"), Pump(reader, "reader"));
        if (!writer.WaitForExit(120_000) || !reader.WaitForExit(120_000))
        {
            Console.WriteLine("[launcher] FAILED: a child did not finish within 120 s");
            try { writer.Kill(); reader.Kill(); } catch (InvalidOperationException) { }
            return 1;
        }

        both.Wait(5_000);
        bool ok = writer.ExitCode == 0 && reader.ExitCode == 0;
        Console.WriteLine(ok
            ? $"[launcher] OK: the reader verified {PayloadMiB} MiB written by another process"
            : $"[launcher] FAILED: writer exit {writer.ExitCode}, reader exit {reader.ExitCode}");
        if (ok && keep)
        {
            Console.WriteLine($"[launcher] kept container \"{name}\" with object \"A\" (sharedstore ls shows it)");
        }

        return ok ? 0 : 1;
    }

    private static Process Child(params string[] args)
    {
        // Run ourselves again: as the apphost when we are one, else as `dotnet ReaderWriter.dll`.
        string self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            psi.FileName = self;
            psi.ArgumentList.Add(typeof(Launcher).Assembly.Location);
        }
        else
        {
            psi.FileName = self;
        }

        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi)!;
    }

    private static Task Pump(Process p, string role) => Task.WhenAll(
        Task.Run(() => { string? l; while ((l = p.StandardOutput.ReadLine()) != null) { Console.WriteLine(l); } }),
        Task.Run(() => { string? l; while ((l = p.StandardError.ReadLine()) != null) { Console.WriteLine($"[{role}] stderr: {l}"); } }));
}

internal static class Roles
{
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(60);

    public static int Writer(string name, int mib, bool keep)
    {
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { StartBrokerIfMissing = true });
        return SurviveRestarts("writer", () => WriteOnce(client, name, mib, keep));
    }

    public static int Reader(string name)
    {
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { StartBrokerIfMissing = true });
        return SurviveRestarts("reader", () => ReadOnce(client, name));
    }

    /// <summary>
    /// How a long-running program survives a broker restart with one client: a call on a handle of the broker that went
    /// away fails with BrokerUnavailable (leases already held stay readable); the client connects again on its next
    /// call — here to a broker it starts, as its options ask — and the program does its work over, joining by name.
    /// Memory-only containers do not outlive their broker, so the writer makes its container again and the reader
    /// waits for it again (durable containers come back with the broker and are simply joined again).
    /// </summary>
    private static int SurviveRestarts(string role, Func<int> work)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return work();
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.BrokerUnavailable && sw.Elapsed < s_wait)
            {
                Say(role, $"the broker went away ({e.Message}); starting over with the same client");
                Thread.Sleep(100);
            }
        }
    }

    private static int WriteOnce(SharedStoreClient client, string name, int mib, bool keep)
    {
        long gid = SharedStoreClient.ProcessGroupId;
        using var con = client.CreateContainer(name, gid);
        Say("writer", $"container_create(\"{name}\", group {gid}) -> container {con.Id} (broker pid {client.BrokerPid})");
        using var obj = con.CreateObject("A", (long)mib << 20);
        var attr = obj.GetAttributes();
        Say("writer", $"object_create(\"A\", {attr.Size} bytes) -> object {obj.Id}");

        byte[] payload = Payload.Make(attr.Size, seed: 42);
        var sw = Stopwatch.StartNew();
        obj.Write(0, payload, s_wait);
        Say("writer", $"object_write(0, {payload.Length} bytes) in {sw.Elapsed.TotalMilliseconds:F1} ms, checksum {Payload.Checksum(payload.AsSpan(Payload.HeaderBytes)):X16}");

        if (keep)
        {
            // The seed's writer destroys; kept, the container outlives us (a container lives until it is destroyed),
            // and the reader still finds the payload after we are gone.
            Say("writer", "leaves the container and its object in place (--keep)");
            return 0;
        }

        sw.Restart();
        obj.Destroy(s_wait); // blocks while the reader still uses "A"
        Say("writer", $"object_destroy returned after {sw.Elapsed.TotalMilliseconds:F1} ms (the reader had left)");
        con.Destroy(s_wait);
        Say("writer", "container_destroy done");
        return 0;
    }

    private static int ReadOnce(SharedStoreClient client, string name)
    {
        Say("reader", $"waiting for container \"{name}\" (broker pid {client.BrokerPid})");
        // The seed polls: while ((con = container_join("con")) < 0); here the broker tells us when it exists.
        using var con = client.WaitForContainer(name, s_wait);
        Say("reader", $"container_join(\"{name}\") -> container {con.Id} (broker pid {client.BrokerPid})");
        using SharedObject obj = con.WaitForObject("A", s_wait);
        var attr = obj.GetAttributes();
        Say("reader", $"object_join(\"A\") -> object {obj.Id}, {attr.Size} bytes");

        // The seed's reader races the writer: it may get before the write. A write locks every block it covers, so a
        // get of the whole object sees it all or not at all; until the writer's header is there, sleep until the
        // object's version moves past the one the lease saw (no polling).
        while (true)
        {
            long seen;
            using (var lease = obj.Get(0, attr.Size, s_wait))
            {
                if (Payload.IsWritten(lease.ReadOnlySpan))
                {
                    var (ok, expected, actual) = Payload.Verify(lease.ReadOnlySpan);
                    Say("reader", $"object_get(0, {lease.Length}) -> version {lease.Version}, checksum {actual:X16}, expected {expected:X16}: {(ok ? "verified" : "MISMATCH")}");
                    if (!ok)
                    {
                        return 1;
                    }

                    break;
                }

                seen = lease.Version;
            }

            try
            {
                obj.WaitForChange(seen, s_wait);
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.Timeout)
            {
                Say("reader", "the writer's payload never appeared");
                return 1;
            }
        }

        Say("reader", "object_put, container_leave");
        return 0;
    }

    private static void Say(string role, string what) => Console.WriteLine($"[{role} {Environment.ProcessId}] {what}");
}

/// <summary>A payload with a 16-byte header: a magic saying it was written, and a checksum of the rest.</summary>
internal static class Payload
{
    public const int HeaderBytes = 16;
    private const ulong Magic = 0x454C504D41535353; // "SSSAMPLE"

    public static byte[] Make(long size, int seed)
    {
        byte[] b = new byte[size];
        new Random(seed).NextBytes(b.AsSpan(HeaderBytes));
        BitConverter.TryWriteBytes(b.AsSpan(0, 8), Magic);
        BitConverter.TryWriteBytes(b.AsSpan(8, 8), Checksum(b.AsSpan(HeaderBytes)));
        return b;
    }

    public static bool IsWritten(ReadOnlySpan<byte> data) => BitConverter.ToUInt64(data[..8]) == Magic;

    public static (bool Ok, ulong Expected, ulong Actual) Verify(ReadOnlySpan<byte> data)
    {
        ulong expected = BitConverter.ToUInt64(data.Slice(8, 8));
        ulong actual = Checksum(data[HeaderBytes..]);
        return (expected == actual, expected, actual);
    }

    /// <summary>A 64-bit multiply-xorshift hash over 8-byte words (fast enough to check 64 MiB in a few ms).</summary>
    public static ulong Checksum(ReadOnlySpan<byte> data)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        ulong h = 0x9E3779B97F4A7C15 ^ (ulong)data.Length;
        foreach (ulong w in words)
        {
            h = (h ^ w) * 0xBF58476D1CE4E5B9;
            h ^= h >> 31;
        }

        for (int i = words.Length * 8; i < data.Length; i++)
        {
            h = (h ^ data[i]) * 0x94D049BB133111EB;
        }

        return h;
    }
}
