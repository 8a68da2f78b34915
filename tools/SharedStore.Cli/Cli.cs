using System.CommandLine;
using Spectre.Console;

namespace SharedStore.Cli;

/// <summary>The command tree and the error handling every subcommand shares.</summary>
internal static class Cli
{
    /// <summary>Global: the broker's socket (default: SHAREDSTORE_SOCKET, else the per-user socket).</summary>
    public static readonly Option<string?> SocketOption = new("--socket")
    {
        Description = "The broker's socket (default: $SHAREDSTORE_SOCKET, else $XDG_RUNTIME_DIR/sharedstore/broker.sock)",
        HelpName = "PATH",
        Recursive = true,
    };

    public static int Run(string[] args)
    {
        var root = new RootCommand("sharedstore: start, stop and inspect a SharedStore broker; list containers, show lock holders, import and export objects.");
        root.Options.Add(SocketOption);
        root.Subcommands.Add(BrokerCommands.Build());
        root.Subcommands.Add(InspectCommands.List());
        root.Subcommands.Add(InspectCommands.Holders());
        root.Subcommands.Add(InspectCommands.Stats());
        root.Subcommands.Add(TransferCommands.Put());
        root.Subcommands.Add(TransferCommands.Get());
        root.Subcommands.Add(ReplicationCommands.TakeOver());
        root.Subcommands.Add(BenchCommand.Build());

        if (Console.IsOutputRedirected)
        {
            // Piped or captured output: no colour codes, no live widgets, and tables not wrapped at 80 columns.
            AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Ansi = AnsiSupport.No,
                ColorSystem = ColorSystemSupport.NoColors,
                Interactive = InteractionSupport.No,
            });
            AnsiConsole.Profile.Width = 240;
        }

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors)
            {
                Console.Error.WriteLine($"sharedstore: {e.Message}");
            }

            Console.Error.WriteLine("Run 'sharedstore --help' for usage.");
            return ExitCodes.Usage;
        }

        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    public static string Socket(ParseResult p) => BrokerEndpoint.Resolve(p.GetValue(SocketOption));

    /// <summary>Runs a subcommand body, turning expected failures into a message on stderr and an exit code.</summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (SharedStoreException e)
        {
            return Fail(ExitCodes.From(e.Code), e.Code == ErrorCode.BrokerUnavailable ? $"{e.Message} (start one with 'sharedstore broker start')" : e.Message);
        }
        catch (CliException e)
        {
            return Fail(e.ExitCode, e.Message);
        }
        catch (FileNotFoundException e)
        {
            return Fail(ExitCodes.NotFound, e.Message);
        }
        catch (DirectoryNotFoundException e)
        {
            return Fail(ExitCodes.NotFound, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            return Fail(ExitCodes.PermissionDenied, e.Message);
        }
        catch (TimeoutException e)
        {
            return Fail(ExitCodes.Timeout, e.Message);
        }
        catch (IOException e)
        {
            return Fail(ExitCodes.Failure, e.Message);
        }
    }

    public static int Fail(int code, string message)
    {
        Console.Error.WriteLine($"sharedstore: {message}");
        return code;
    }

    public static SharedStoreClient Connect(ParseResult p) => SharedStoreClient.Connect(new SharedStoreClientOptions
    {
        SocketPath = Socket(p),
        RequestTimeout = TimeSpan.FromSeconds(15),
        ClientName = "sharedstore",
    });

    public static string Bytes(double bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        int u = 0;
        while (bytes >= 1024 && u < units.Length - 1)
        {
            bytes /= 1024;
            u++;
        }

        return u == 0 ? $"{bytes:0} B" : $"{bytes:0.##} {units[u]}";
    }
}

/// <summary>An expected failure of a subcommand, with the exit code to return.</summary>
internal sealed class CliException(int exitCode, string message) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
