using System.CommandLine;
using System.Globalization;
using Spectre.Console;

namespace SharedStore.Cli;

/// <summary><c>sharedstore ls</c>, <c>holders</c> and <c>stats</c>: read-only views of the broker.</summary>
internal static class InspectCommands
{
    public static Command List()
    {
        var cmd = new Command("ls", "List containers (group, write policy, member pids, size, replication role, lag and stream) and their objects (size, use count).");
        cmd.SetAction(p => Cli.Guard(() =>
        {
            using var client = Cli.Connect(p);
            var list = client.ListContainers();
            if (list.Count == 0)
            {
                AnsiConsole.WriteLine("no containers");
                return ExitCodes.Ok;
            }

            var groups = GroupNames();
            var containers = new TextTable("containers", "container", "group", "write policy", ">block size", "members (pid)", ">size", ">objects", "role", ">lag", "stream");
            var objects = new TextTable("objects", "container", "object", ">size", ">bytes", ">use count", ">blocks");
            foreach (var c in list.OrderBy(c => c.Name, StringComparer.Ordinal))
            {
                string group = groups.TryGetValue(c.GroupId, out string? g) ? $"{g} ({c.GroupId})" : c.GroupId.ToString(CultureInfo.InvariantCulture);
                string policy = c.WritePolicy == WritePolicy.CreatorOnly ? "creator only" : "all members";
                string members = string.Join(", ", c.MemberPids.Select(pid => pid.ToString(CultureInfo.InvariantCulture)));
                containers.AddRow(c.Name, group, policy, Cli.Bytes(c.BlockSize), members.Length == 0 ? "-" : members,
                    Cli.Bytes(c.Bytes), c.Objects.Count.ToString(CultureInfo.InvariantCulture), Role(c), Lag(c), c.Replication?.Stream ?? "-");
                foreach (var o in c.Objects.OrderBy(o => o.Name, StringComparer.Ordinal))
                {
                    objects.AddRow(c.Name, o.Name, Cli.Bytes(o.Size), o.Size.ToString(CultureInfo.InvariantCulture),
                        o.UseCount.ToString(CultureInfo.InvariantCulture), o.BlockCount.ToString(CultureInfo.InvariantCulture));
                }
            }

            containers.Write();
            if (objects.RowCount > 0)
            {
                objects.Write();
            }

            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>"owner" or "replica" for a replicated container, "-" otherwise.</summary>
    private static string Role(ContainerListing c) => c.Replication is null ? "-" : c.Replication.Replica ? "replica" : "owner";

    /// <summary>A replica's lag in ms; "-" for an owner (the source) and a container that is not replicated.</summary>
    private static string Lag(ContainerListing c) =>
        c.Replication is { Replica: true } ? string.Create(CultureInfo.InvariantCulture, $"{c.ReplicationLagMs:0.0} ms") : "-";

    public static Command Holders()
    {
        var container = new Argument<string>("CONTAINER") { Description = "Container name" };
        var obj = new Argument<string>("OBJECT") { Description = "Object name" };
        var cmd = new Command("holders", "Per block of an object: the reading processes, the writing process and the writers waiting (pid and process name). Lists only blocks someone holds or waits for.")
        {
            container, obj,
        };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            using var client = Cli.Connect(p);
            string c = p.GetValue(container)!, o = p.GetValue(obj)!;
            var r = client.Holders(c, o);
            if (r.Blocks.Count == 0)
            {
                AnsiConsole.MarkupLineInterpolated($"no block of {c}/{o} ({r.BlockCount} block(s) of {Cli.Bytes(r.BlockSize)}) is held or awaited");
                return ExitCodes.Ok;
            }

            var table = new TextTable($"{c}/{o}: {r.BlockCount} block(s) of {Cli.Bytes(r.BlockSize)}", ">block", "readers", "writer", "waiting writers");
            foreach (var b in r.Blocks)
            {
                // A pending owner (it took the block but waits for the readers to drain) is a waiting writer too: the
                // writer column shows only a writer that is writing now.
                string readers = string.Join(", ", b.Readers.Select(h => h.Count > 1 ? $"{Who(h)} x{h.Count}" : Who(h)));
                string writer = b.Writer is { Active: true } ? Who(b.Writer) : "-";
                var waitingList = new List<string>();
                if (b.Writer is { Active: false })
                {
                    waitingList.Add($"{Who(b.Writer)} [next, readers draining]");
                }

                waitingList.AddRange(b.Waiting.Where(h => b.Writer is not { Active: false } || h.Slot != b.Writer.Slot).Select(Who));
                string waiting = string.Join(", ", waitingList);
                table.AddRow(
                    b.Block.ToString(CultureInfo.InvariantCulture) + (b.Torn ? " (torn)" : ""),
                    readers.Length == 0 ? "-" : readers,
                    writer,
                    waiting.Length == 0 ? "-" : waiting);
            }

            table.Write();
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    public static Command Stats()
    {
        var cmd = new Command("stats", "A snapshot of the broker's metrics (the SharedStore.Broker meter): operations by kind, bytes, recoveries.");
        cmd.SetAction(p => Cli.Guard(() =>
        {
            using var client = Cli.Connect(p);
            var s = client.Status();
            var table = new Table().Title($"SharedStore.Broker, pid {s.BrokerPid}")
                .AddColumn("instrument").AddColumn("tags").AddColumn(new TableColumn("value").RightAligned()).AddColumn("unit");
            foreach (var m in s.Metrics)
            {
                table.AddRow(Markup.Escape(m.Name), Markup.Escape(m.Tags), m.Value.ToString("0.###", CultureInfo.InvariantCulture), Markup.Escape(m.Unit));
            }

            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static string Who(BlockHolder h) =>
        h.Pid == 0 ? $"slot {h.Slot} (no member)" : string.IsNullOrEmpty(h.ProcessName) ? $"pid {h.Pid}" : $"pid {h.Pid} ({h.ProcessName})";

    private static Dictionary<long, string> GroupNames()
    {
        var names = new Dictionary<long, string>();
        try
        {
            foreach (string line in File.ReadLines("/etc/group"))
            {
                string[] f = line.Split(':');
                if (f.Length >= 3 && long.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out long gid))
                {
                    names.TryAdd(gid, f[0]);
                }
            }
        }
        catch (IOException)
        {
        }

        return names;
    }
}
