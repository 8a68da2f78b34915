using System.CommandLine;
using SharedStore.Devices;
using Spectre.Console;

namespace SharedStore.Cli;

/// <summary>
/// <c>sharedstore put FILE CONTAINER OBJECT</c> and <c>sharedstore get CONTAINER OBJECT FILE</c>: import a file into
/// an object and export an object to a file, one block-aligned chunk at a time (each chunk under its blocks' locks).
/// </summary>
/// <remarks>The file side goes through the device library: a <see cref="RandomAccessFileDevice"/> with a sequential
/// hint and the scheduler <see cref="DeviceSchedulers.Create"/> picks (io_uring where available).</remarks>
internal static class TransferCommands
{
    private const int MaxChunk = 1 << 24; // 16 MiB: large enough to amortise the lock round, small enough to show progress

    public static Command Put()
    {
        var file = new Argument<FileInfo>("FILE") { Description = "The file to import" };
        var container = new Argument<string>("CONTAINER") { Description = "Container name" };
        var obj = new Argument<string>("OBJECT") { Description = "Object name (created with the file's size if missing)" };
        var create = new Option<bool>("--create-container") { Description = "Create the container (for the caller's primary group) if it does not exist" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each chunk's write locks", DefaultValueFactory = _ => 30 };
        var cmd = new Command("put", "Import FILE into OBJECT of CONTAINER (the object is created with the file's size if missing).") { file, container, obj, create, timeout };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            var fi = p.GetValue(file)!;
            if (!fi.Exists)
            {
                throw new CliException(ExitCodes.NotFound, $"file '{fi.FullName}' does not exist");
            }

            using var client = Cli.Connect(p);
            string cName = p.GetValue(container)!, oName = p.GetValue(obj)!;
            using var con = JoinOrCreate(client, cName, p.GetValue(create));
            long length = fi.Length;
            using var o = JoinObject(con, oName, createSize: Math.Max(length, 1));
            if (o.Size < length)
            {
                throw new CliException(ExitCodes.Failure, $"object {cName}/{oName} has {o.Size} bytes, the file {length}: too small");
            }

            var wait = TimeSpan.FromSeconds(p.GetValue(timeout));
            const DeviceMode mode = DeviceMode.ReadOnly | DeviceMode.SequentialAccess;
            using var device = new RandomAccessFileDevice(fi.FullName, mode);
            using var scheduler = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, mode);
            Transfer($"put {fi.Name} → {cName}/{oName}", length, ChunkSize(con), (offset, buffer, count) =>
            {
                // Short only at end of file.
                int n = scheduler.ReadAsync(device, offset, buffer.AsMemory(0, count)).AsTask().GetAwaiter().GetResult();
                o.Write(offset, buffer.AsSpan(0, n), wait);
                return n;
            });
            AnsiConsole.MarkupLineInterpolated($"put {length} bytes from {fi.FullName} into {cName}/{oName} (object size {o.Size})");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    public static Command Get()
    {
        var container = new Argument<string>("CONTAINER") { Description = "Container name" };
        var obj = new Argument<string>("OBJECT") { Description = "Object name" };
        var file = new Argument<FileInfo>("FILE") { Description = "The file to write (created or truncated)" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each chunk's read locks", DefaultValueFactory = _ => 30 };
        var cmd = new Command("get", "Export OBJECT of CONTAINER into FILE.") { container, obj, file, timeout };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            var fi = p.GetValue(file)!;
            using var client = Cli.Connect(p);
            string cName = p.GetValue(container)!, oName = p.GetValue(obj)!;
            using var con = client.JoinContainer(cName);
            using var o = con.JoinObject(oName);
            var wait = TimeSpan.FromSeconds(p.GetValue(timeout));
            const DeviceMode mode = DeviceMode.Create | DeviceMode.Truncate | DeviceMode.SequentialAccess;
            using var device = new RandomAccessFileDevice(fi.FullName, mode);
            using var scheduler = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, mode);
            Transfer($"get {cName}/{oName} → {fi.Name}", o.Size, ChunkSize(con), (offset, buffer, count) =>
            {
                // Copy out under the read locks, write to the file after the put: the lease is held for a memcpy,
                // not for disk latency.
                using (var lease = o.Get(offset, count, wait))
                {
                    lease.ReadOnlySpan.CopyTo(buffer);
                }

                scheduler.WriteAsync(device, offset, buffer.AsMemory(0, count)).AsTask().GetAwaiter().GetResult();
                return count;
            });
            AnsiConsole.MarkupLineInterpolated($"got {o.Size} bytes of {cName}/{oName} into {fi.FullName}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static Container JoinOrCreate(SharedStoreClient client, string name, bool create)
    {
        try
        {
            return client.JoinContainer(name);
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.NotFound && create)
        {
            return client.CreateContainer(name, SharedStoreClient.ProcessGroupId);
        }
    }

    private static SharedObject JoinObject(Container con, string name, long createSize)
    {
        try
        {
            return con.JoinObject(name);
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.NotFound)
        {
            return con.CreateObject(name, createSize);
        }
    }

    // Whole blocks per chunk, so each chunk takes each block lock once.
    private static int ChunkSize(Container con) => con.BlockSize >= MaxChunk ? con.BlockSize : MaxChunk / con.BlockSize * con.BlockSize;

    /// <summary>Moves <paramref name="length"/> bytes in chunks through <paramref name="step"/>(offset, buffer,
    /// count) → bytes moved, with a progress bar on a terminal.</summary>
    private static void Transfer(string title, long length, int chunk, Func<long, byte[], int, int> step)
    {
        byte[] buffer = new byte[(int)Math.Min(chunk, Math.Max(length, 1))];
        {
            void Loop(Action<long> progress)
            {
                long offset = 0;
                while (offset < length)
                {
                    int n = step(offset, buffer, (int)Math.Min(buffer.Length, length - offset));
                    if (n == 0)
                    {
                        throw new IOException($"the file ended at {offset} of {length} bytes");
                    }

                    offset += n;
                    progress(offset);
                }
            }

            if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsOutputRedirected)
            {
                Loop(_ => { });
                return;
            }

            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(length, 1));
                    Loop(done => task.Value = done);
                    task.Value = Math.Max(length, 1);
                });
        }
    }
}
