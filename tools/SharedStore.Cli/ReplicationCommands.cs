using System.CommandLine;
using Spectre.Console;

namespace SharedStore.Cli;

/// <summary><c>sharedstore takeover CONTAINER</c>: failover of a replicated container (docs/ARCHITECTURE.md §14.1):
/// this host's broker takes the ownership of a container whose owner died, through the library's
/// <see cref="ReplicationOptions.TakeOver"/>. The container stays on the broker after the command exits.</summary>
internal static class ReplicationCommands
{
    public static Command TakeOver()
    {
        var container = new Argument<string>("CONTAINER") { Description = "The replicated container's name" };
        var nats = new Option<string?>("--nats") { Description = "NATS servers (default: the broker's --nats; others only for root or the broker's user)", HelpName = "URLS" };
        var stream = new Option<string?>("--stream") { Description = "The block stream (default SHAREDSTORE)" };
        var bucket = new Option<string?>("--bucket") { Description = "The catalog and lease bucket (default SHAREDSTORE)" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds the whole takeover may take (it waits 1.5 lease times first)", DefaultValueFactory = _ => 120 };
        var cmd = new Command("takeover", "Make this broker the owner of a replicated CONTAINER whose owner died (waits until its lease has not moved for 1.5 lease times, then rebuilds it from the stream, writable). Exit 7 when the owner is alive.")
        {
            container, nats, stream, bucket, timeout,
        };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            using var client = SharedStoreClient.Connect(new SharedStoreClientOptions
            {
                SocketPath = Cli.Socket(p),
                RequestTimeout = TimeSpan.FromSeconds(p.GetValue(timeout)),
                ClientName = "sharedstore",
            });
            string name = p.GetValue(container)!;
            var options = new ContainerOptions
            {
                Replication = new ReplicationOptions(p.GetValue(nats)) { TakeOver = true, Stream = p.GetValue(stream), Bucket = p.GetValue(bucket) },
            };
            using var c = client.CreateContainer(name, SharedStoreClient.ProcessGroupId, options);
            AnsiConsole.MarkupLineInterpolated($"took over {name}: this broker owns it now (block size {c.BlockSize}); start its writers here");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
