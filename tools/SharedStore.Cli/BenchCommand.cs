using System.CommandLine;
using System.Diagnostics;

namespace SharedStore.Cli;

/// <summary><c>sharedstore bench [ARGS…]</c>: runs the load tool, SharedStore.Bench, with the given arguments and
/// returns its exit code. Uses SharedStore.Bench.dll beside this command if present, else
/// <c>dotnet run --project tools/SharedStore.Bench -c Release</c> from the repository this command was built in.</summary>
internal static class BenchCommand
{
    public static Command Build()
    {
        var cmd = new Command("bench", "Run the benchmark tool (SharedStore.Bench); every argument after 'bench' is passed on (e.g. --list, --json, SCENARIO).")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        cmd.SetAction(p => Cli.Guard(() =>
        {
            var argv = new List<string>();
            string beside = Path.Combine(AppContext.BaseDirectory, "SharedStore.Bench.dll");
            if (File.Exists(beside))
            {
                argv.Add(beside);
            }
            else if (FindProject() is { } project)
            {
                argv.AddRange(["run", "--project", project, "-c", "Release", "--"]);
            }
            else
            {
                throw new CliException(ExitCodes.NotFound, $"SharedStore.Bench.dll is not beside this command ({AppContext.BaseDirectory}) and no tools/SharedStore.Bench project was found above it");
            }

            argv.AddRange(p.UnmatchedTokens);
            var psi = new ProcessStartInfo(DotnetHost()) { UseShellExecute = false };
            foreach (string a in argv)
            {
                psi.ArgumentList.Add(a);
            }

            // The benchmark reaches the broker through the same socket this command was told about.
            psi.Environment[BrokerEndpoint.EnvironmentVariable] = Cli.Socket(p);
            using var child = Process.Start(psi) ?? throw new CliException(ExitCodes.Failure, "could not start dotnet");
            child.WaitForExit();
            return child.ExitCode;
        }));
        return cmd;
    }

    private static string? FindProject()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tools", "SharedStore.Bench", "SharedStore.Bench.csproj");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    private static string DotnetHost()
    {
        string? self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            return self;
        }

        string? root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        return root is not null && File.Exists(Path.Combine(root, "dotnet")) ? Path.Combine(root, "dotnet") : "dotnet";
    }
}
