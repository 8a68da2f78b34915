using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using SharedStore;
using SharedStore.Broker;

// SharedStore broker: owns container memory and lock tables, admits clients by their Unix credentials. A generic
// host: configuration from files, the environment and the command line; ILogger to stderr and optionally a file;
// metrics through IMeterFactory; stops gracefully on SIGTERM/SIGINT (ConsoleLifetime). See docs/OPERATIONS.md.
//   SharedStore.Broker [--socket PATH] [--system] [--memory-limit BYTES] [--log FILE] [--log-level LEVEL] [--config FILE]
// --system: every user may connect (socket 0666, directory 0755) and access is decided per container by group;
// without --socket it serves /run/sharedstore/broker.sock.
// --detach (what a client that starts a broker passes): a session of its own at once, and stdio on /dev/null once it
// accepts connections, so the starter's stderr pipe reads EOF then (see BrokerLauncher).
// Exit codes: 0 stopped cleanly, 2 bad arguments or configuration, 3 another broker serves the socket, 4 a folder it
// needs cannot be made or is unsafe (BrokerFolders).
Dictionary<string, string?> commandLine;
string? configFile;
bool detach;
try
{
    if (!BrokerCommandLine.TryParse(args, out commandLine, out configFile, out detach))
    {
        Console.WriteLine(BrokerCommandLine.Usage);
        return 0;
    }
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"sharedstore-broker: {e.Message}");
    Console.Error.WriteLine(BrokerCommandLine.Usage);
    return 2;
}

if (detach)
{
    _ = Interop.Libc.setsid(); // fails only for a process-group leader, which a launched child is not
}

var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, Args = [] });

// Lowest to highest precedence: system file, user file, --config file, SHAREDSTORE_* environment, command line.
builder.Configuration.AddJsonFile("/etc/sharedstore/sharedstore.json", optional: true, reloadOnChange: false);
builder.Configuration.AddJsonFile(Path.Combine(BrokerCommandLine.UserConfigDirectory, "sharedstore.json"), optional: true, reloadOnChange: false);
if (configFile is not null)
{
    builder.Configuration.AddJsonFile(Path.GetFullPath(configFile), optional: false, reloadOnChange: false);
}

builder.Configuration.AddEnvironmentVariables("SHAREDSTORE_");
builder.Configuration.AddInMemoryCollection(commandLine);

BrokerOptions options;
LogLevel level;
try
{
    (options, level) = BrokerCommandLine.Bind(builder.Configuration);
}
catch (Exception e) when (e is FormatException or InvalidDataException or OverflowException)
{
    Console.Error.WriteLine($"sharedstore-broker: bad configuration: {e.Message}");
    return 2;
}

// Every folder the broker writes into exists, and is safe, before the first file (the log) is opened.
try
{
    BrokerFolders.Prepare(options);
}
catch (BrokerFolderException e)
{
    Console.Error.WriteLine($"sharedstore-broker: {e.Message}");
    return 4;
}

builder.Logging.ClearProviders();
builder.Logging.SetMinimumLevel(level);
builder.Logging.AddSimpleConsole(o =>
{
    o.SingleLine = true;
    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
    o.UseUtcTimestamp = true;
});
builder.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace); // stdout stays free
if (options.LogPath is not null)
{
    builder.Logging.AddProvider(new FileLoggerProvider(options.LogPath, level));
}

builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
builder.Services.AddMetrics();
builder.Services.AddSingleton(options);
builder.Services.AddSingleton<BrokerMetrics>();
builder.Services.AddSingleton<BrokerServer>();

using var host = builder.Build();
var logger = host.Services.GetRequiredService<ILogger<BrokerServer>>();
AppDomain.CurrentDomain.UnhandledException += (_, e) => Log.UnhandledException(logger, e.ExceptionObject);
Log.ConfigurationLoaded(logger, options.SocketPath, options.SystemWide, options.MemoryLimit, options.LogPath ?? "");

var server = host.Services.GetRequiredService<BrokerServer>();
if (!server.Start(out string? refusal))
{
    Log.BrokerRefused(logger, refusal!);
    Console.Error.WriteLine($"sharedstore-broker: {refusal}");
    return 3;
}

Log.BrokerListening(logger, Environment.ProcessId, server.SocketPath);
if (detach)
{
    DetachStdio();
}

host.Run(); // returns when the lifetime stops: SIGTERM, SIGINT or SIGQUIT
Log.BrokerStopping(logger);
server.Stop(); // the container disposes the server next: socket, pid file and instance lock go, in that order
return 0;

// Whoever started us reads our stderr until EOF to learn whether we started: point every stdio descriptor at
// /dev/null now (the log file keeps everything; the console logger writes into /dev/null from here on).
static void DetachStdio()
{
    int devNull = Interop.Libc.open("/dev/null", Interop.Libc.O_RDWR, 0);
    if (devNull >= 0)
    {
        Console.Error.Flush();
        for (int fd = 0; fd <= 2; fd++)
        {
            _ = Interop.Libc.dup2(devNull, fd);
        }

        _ = Interop.Libc.close(devNull);
    }
}

/// <summary>The broker's own flags (kept as they were: clients and tests pass them) turned into configuration keys,
/// and the configuration bound to <see cref="BrokerOptions"/>.</summary>
internal static class BrokerCommandLine
{
    public const string Usage = "SharedStore.Broker [--socket PATH] [--system] [--memory-limit BYTES] [--log FILE] [--log-level LEVEL] [--async-scheduler auto|threadpool|iouring] [--state-dir DIR] [--uid-memory-quota BYTES] [--max-connections-per-uid N] [--hello-timeout-ms MS] [--nats URLS] [--replication-lease-ms MS] [--config FILE] [--detach]";

    /// <summary>Where a per-user sharedstore.json is read from: $XDG_CONFIG_HOME/sharedstore, else ~/.config/sharedstore.</summary>
    public static string UserConfigDirectory
    {
        get
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CONFIG_HOME");
            string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(home, ".config") : xdg, "sharedstore");
        }
    }

    /// <summary>False for --help. Throws <see cref="ArgumentException"/> on a bad argument.</summary>
    public static bool TryParse(string[] args, out Dictionary<string, string?> values, out string? configFile, out bool detach)
    {
        values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        configFile = null;
        detach = false;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{arg} needs a value");
            switch (arg)
            {
                case "--socket": values["Socket"] = Next(); break;
                case "--system": values["System"] = "true"; break;
                case "--memory-limit": values["MemoryLimit"] = Next(); break;
                case "--log": values["Log"] = Next(); break;
                case "--log-level": values["LogLevel"] = Next(); break;
                case "--async-scheduler": values["AsyncScheduler"] = Next(); break;
                case "--state-dir": values["StateDirectory"] = Next(); break;
                case "--uid-memory-quota": values["UidMemoryQuota"] = Next(); break;
                case "--max-connections-per-uid": values["MaxConnectionsPerUid"] = Next(); break;
                case "--hello-timeout-ms": values["HelloTimeoutMs"] = Next(); break;
                case "--nats": values["NatsUrl"] = Next(); break;
                case "--replication-lease-ms": values["ReplicationLeaseMs"] = Next(); break;
                case "--config": configFile = Next(); break;
                case "--detach": detach = true; break;
                case "-h":
                case "--help":
                    return false;
                default:
                    throw new ArgumentException($"unknown argument '{arg}'");
            }
        }

        return true;
    }

    /// <summary>Keys: Socket, System, MemoryLimit, Log, LogLevel, DefaultBlockSize (case-insensitive; the environment
    /// spells them SHAREDSTORE_SOCKET, SHAREDSTORE_MEMORYLIMIT…).</summary>
    public static (BrokerOptions Options, LogLevel Level) Bind(IConfiguration config)
    {
        var options = new BrokerOptions();
        bool system = bool.TryParse(config["System"], out bool s) && s;
        options.SystemWide = system;
        string? socket = config["Socket"];
        options.SocketPath = !string.IsNullOrEmpty(socket) ? socket : system ? BrokerEndpoint.SystemSocketPath : BrokerEndpoint.DefaultSocketPath;
        if (config["MemoryLimit"] is { Length: > 0 } limit)
        {
            options.MemoryLimit = long.Parse(limit, CultureInfo.InvariantCulture);
        }

        if (config["UidMemoryQuota"] is { Length: > 0 } quota)
        {
            options.UidMemoryQuota = long.Parse(quota, CultureInfo.InvariantCulture);
        }

        if (config["MaxConnectionsPerUid"] is { Length: > 0 } maxConnections)
        {
            options.MaxConnectionsPerUid = int.Parse(maxConnections, CultureInfo.InvariantCulture);
            if (options.MaxConnectionsPerUid < 1)
            {
                throw new FormatException("MaxConnectionsPerUid must be at least 1");
            }
        }

        if (config["HelloTimeoutMs"] is { Length: > 0 } hello)
        {
            options.HelloTimeout = TimeSpan.FromMilliseconds(int.Parse(hello, CultureInfo.InvariantCulture));
        }

        if (config["DefaultBlockSize"] is { Length: > 0 } block)
        {
            options.DefaultBlockSize = int.Parse(block, CultureInfo.InvariantCulture);
        }

        if (config["AsyncScheduler"] is { Length: > 0 } sched)
        {
            options.AsyncScheduler = sched.ToLowerInvariant() switch
            {
                "auto" => SharedStore.Devices.DeviceSchedulerKind.Auto,
                "threadpool" => SharedStore.Devices.DeviceSchedulerKind.ThreadPool,
                "iouring" => SharedStore.Devices.DeviceSchedulerKind.IoUring,
                _ => throw new FormatException($"async scheduler '{sched}' is not one of auto, threadpool, iouring"),
            };
        }

        options.StateDirectory = config["StateDirectory"] is { Length: > 0 } stateDir ? stateDir : null;
        options.LogPath = config["Log"] is { Length: > 0 } log ? log : null;
        options.NatsUrl = config["NatsUrl"] is { Length: > 0 } nats ? nats : null;
        if (config["ReplicationLeaseMs"] is { Length: > 0 } leaseMs)
        {
            options.ReplicationLease = TimeSpan.FromMilliseconds(int.Parse(leaseMs, CultureInfo.InvariantCulture));
            if (options.ReplicationLease < TimeSpan.FromMilliseconds(300))
            {
                throw new FormatException("ReplicationLeaseMs must be at least 300");
            }
        }
        var level = LogLevel.Information;
        if (config["LogLevel"] is { Length: > 0 } l && !Enum.TryParse(l, ignoreCase: true, out level))
        {
            throw new FormatException($"log level '{l}' is not one of Trace, Debug, Information, Warning, Error, Critical, None");
        }

        return (options, level);
    }
}
