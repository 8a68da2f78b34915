using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using SharedStore.Protocol;
using Spectre.Console;

namespace SharedStore.Cli;

/// <summary><c>sharedstore broker start|stop|status</c>.</summary>
internal static partial class BrokerCommands
{
    private const int SigTerm = 15;
    private const int Esrch = 3;

    public static Command Build()
    {
        var broker = new Command("broker", "Start, stop or inspect the broker serving the socket.");
        broker.Subcommands.Add(Start());
        broker.Subcommands.Add(Stop());
        broker.Subcommands.Add(Status());
        return broker;
    }

    private static Command Start()
    {
        var system = new Option<bool>("--system") { Description = "System-wide broker: socket 0666, access decided per container by group" };
        var memoryLimit = new Option<long?>("--memory-limit") { Description = "Most bytes of shared memory the broker hands out", HelpName = "BYTES" };
        var logLevel = new Option<string?>("--log-level") { Description = "Trace, Debug, Information (default), Warning, Error" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the broker to accept connections", DefaultValueFactory = _ => 15 };
        var cmd = new Command("start", "Start a broker in the background and return once its socket accepts connections. Logs to SOCKET.log; its pid is in SOCKET.pid.")
        {
            system, memoryLimit, logLevel, timeout,
        };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            string socket = Cli.Socket(p);
            if (TryConnect(socket) is { } running)
            {
                using (running)
                {
                    AnsiConsole.MarkupLineInterpolated($"broker already running: pid [bold]{running.BrokerPid}[/], socket {socket}");
                    return ExitCodes.Ok;
                }
            }

            var options = new SharedStoreClientOptions { SocketPath = socket };
            if (p.GetValue(system))
            {
                options.BrokerArguments.Add("--system");
            }

            if (p.GetValue(memoryLimit) is { } limit)
            {
                options.BrokerArguments.Add("--memory-limit");
                options.BrokerArguments.Add(limit.ToString(CultureInfo.InvariantCulture));
            }

            if (p.GetValue(logLevel) is { } level)
            {
                options.BrokerArguments.Add("--log-level");
                options.BrokerArguments.Add(level);
            }

            // The broker makes its own folders; a start that fails says why (its exit code and last words).
            try
            {
                BrokerLauncher.Start(socket, options, TimeSpan.FromSeconds(p.GetValue(timeout)));
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.BrokerUnavailable)
            {
                throw new CliException(ExitCodes.BrokerUnavailable, e.Message);
            }

            using var started = TryConnect(socket) ?? throw new CliException(ExitCodes.BrokerUnavailable, $"the broker started at {socket} stopped answering at once; see {socket}.log");
            AnsiConsole.MarkupLineInterpolated($"broker started: pid [bold]{started.BrokerPid}[/], socket {socket}, log {socket}.log");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static Command Stop()
    {
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the broker to exit", DefaultValueFactory = _ => 10 };
        var cmd = new Command("stop", "Stop the broker gracefully (SIGTERM) and wait until it has exited and its socket is gone.") { timeout };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            string socket = Cli.Socket(p);
            int pid = 0;
            if (TryConnect(socket) is { } client)
            {
                using (client)
                {
                    pid = client.BrokerPid; // the broker's own word beats a pid file
                }
            }
            else if (ReadPid(socket + ".pid") is int filePid && IsAlive(filePid))
            {
                pid = filePid;
            }

            if (pid == 0)
            {
                throw new CliException(ExitCodes.BrokerUnavailable, $"no broker is running at {socket}");
            }

            if (kill(pid, SigTerm) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw errno == Esrch
                    ? new CliException(ExitCodes.BrokerUnavailable, $"broker pid {pid} is gone already")
                    : new CliException(ExitCodes.PermissionDenied, $"cannot signal broker pid {pid}: errno {errno}");
            }

            var sw = Stopwatch.StartNew();
            var limit = TimeSpan.FromSeconds(p.GetValue(timeout));
            while (IsAlive(pid) || File.Exists(socket))
            {
                if (sw.Elapsed > limit)
                {
                    throw new CliException(ExitCodes.Timeout, $"broker pid {pid} did not exit within {limit.TotalSeconds:0.#} s of SIGTERM");
                }

                Thread.Sleep(20);
            }

            AnsiConsole.MarkupLineInterpolated($"broker stopped: pid {pid}, socket {socket}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static Command Status()
    {
        var cmd = new Command("status", "Whether a broker runs, its pid, uptime, containers and memory in use. Exit code 3 when none runs.");
        cmd.SetAction(p => Cli.Guard(() =>
        {
            string socket = Cli.Socket(p);
            using var client = TryConnect(socket);
            if (client is null)
            {
                AnsiConsole.MarkupLineInterpolated($"broker: [red]not running[/] (socket {socket})");
                return ExitCodes.BrokerUnavailable;
            }

            var s = Request(client, new Request { Status = new StatusRequest() }).Status;
            var table = new Table().HideHeaders().AddColumn("field").AddColumn("value");
            table.AddRow("broker", "[green]running[/]");
            table.AddRow("pid", s.BrokerPid.ToString(CultureInfo.InvariantCulture));
            table.AddRow("socket", Markup.Escape(s.SocketPath));
            table.AddRow("uptime", TimeSpan.FromMilliseconds(s.UptimeMs).ToString(@"d\.hh\:mm\:ss", CultureInfo.InvariantCulture));
            table.AddRow("containers", s.ContainerCount.ToString(CultureInfo.InvariantCulture));
            table.AddRow("objects", s.ObjectCount.ToString(CultureInfo.InvariantCulture));
            table.AddRow("object bytes", $"{s.ObjectBytes} ({Cli.Bytes(s.ObjectBytes)})");
            table.AddRow("bytes in use", $"{s.BytesInUse} ({Cli.Bytes(s.BytesInUse)})");
            table.AddRow("memory limit", $"{s.MemoryLimit} ({Cli.Bytes(s.MemoryLimit)})");
            table.AddRow("sessions", s.SessionCount.ToString(CultureInfo.InvariantCulture));
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>One raw round trip; library errors surface as <see cref="SharedStoreException"/>.</summary>
    public static Response Request(SharedStoreClient client, Request request) =>
        client.Call(request, TimeSpan.FromSeconds(15), default).Response;

    /// <summary>A connected client, or null when no broker answers.</summary>
    public static SharedStoreClient? TryConnect(string socket)
    {
        try
        {
            return SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = socket, RequestTimeout = TimeSpan.FromSeconds(5), ClientName = "sharedstore" });
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.BrokerUnavailable)
        {
            return null;
        }
    }

    private static int? ReadPid(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    // A zombie (exited, not yet reaped by its parent) counts as gone: the broker's parent is whoever started it (or,
    // once that exited, whatever reaps orphans here, which may be slow or absent in a container).
    private static bool IsAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
        }
        catch (IOException)
        {
            return false;
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}
