using System.Globalization;
using System.Runtime.InteropServices;
using SharedStore;
using SharedStore.Broker;

// SharedStore broker: owns container memory and lock tables, admits clients by their Unix credentials.
//   SharedStore.Broker [--socket PATH] [--system] [--memory-limit BYTES] [--log FILE]
// --system: every user may connect (socket 0666, directory 0755) and access is decided per container by group;
// without --socket it serves /run/sharedstore/broker.sock.
// Exit codes: 0 stopped cleanly, 2 bad arguments, 3 another broker serves the socket.
var options = new BrokerOptions();
bool socketGiven = false;
for (int i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--socket": options.SocketPath = Next(); socketGiven = true; break;
        case "--system": options.SystemWide = true; break;
        case "--memory-limit": options.MemoryLimit = long.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--log": options.LogPath = Next(); break;
        case "-h":
        case "--help":
            Console.WriteLine("SharedStore.Broker [--socket PATH] [--system] [--memory-limit BYTES] [--log FILE]");
            return 0;
        default:
            Console.Error.WriteLine($"unknown argument '{args[i]}'");
            return 2;
    }
}

if (options.SystemWide && !socketGiven)
{
    options.SocketPath = BrokerEndpoint.SystemSocketPath; // --system alone serves the well-known system socket
}

BrokerServer.EnsureSocketDirectory(options);
if (options.LogPath is not null)
{
    var log = new StreamWriter(options.LogPath, append: true) { AutoFlush = true };
    BrokerState.Log = s =>
    {
        lock (log)
        {
            log.WriteLine($"{DateTime.UtcNow:O} {s}");
        }
    };
}

AppDomain.CurrentDomain.UnhandledException += (_, e) => BrokerState.Log($"FATAL unhandled exception: {e.ExceptionObject}");
using var server = new BrokerServer(options);
if (!server.Start(out string? refusal))
{
    Console.Error.WriteLine($"sharedstore-broker: {refusal}");
    return 3;
}

using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; server.Stop(); });
using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; server.Stop(); });
BrokerState.Log($"broker pid {Environment.ProcessId} listening on {server.SocketPath}");
Console.Out.Flush();
server.WaitForStop();
BrokerState.Log("broker stopping");
return 0;
