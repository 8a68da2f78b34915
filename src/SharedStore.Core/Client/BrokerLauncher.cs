using System.Diagnostics;

namespace SharedStore;

/// <summary>Starts a broker as a detached background process (its own session, stdio on /dev/null, a log file
/// beside its socket), so it outlives the client that started it and holds none of its pipes.</summary>
internal static class BrokerLauncher
{
    public static void Start(string socketPath, SharedStoreClientOptions options)
    {
        string broker = options.BrokerPath
            ?? Environment.GetEnvironmentVariable("SHAREDSTORE_BROKER")
            ?? Path.Combine(AppContext.BaseDirectory, "SharedStore.Broker.dll");
        if (!File.Exists(broker))
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, $"no broker is running at {socketPath} and the broker to start was not found at {broker}");
        }

        var argv = new List<string>();
        if (broker.EndsWith(".dll", StringComparison.Ordinal))
        {
            argv.Add(DotnetHost());
        }

        argv.Add(broker);
        argv.AddRange(["--socket", socketPath, "--log", socketPath + ".log"]);
        argv.AddRange(options.BrokerArguments);

        // sh: redirect stdio away from us; setsid -f: fork into a new session, so neither our exit nor our terminal's
        // signals reach it.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec setsid -f \"$@\" </dev/null >/dev/null 2>&1");
        psi.ArgumentList.Add("sharedstore-launch");
        foreach (string a in argv)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new SharedStoreException(ErrorCode.BrokerUnavailable, "could not start /bin/sh to launch the broker");
        if (!p.WaitForExit(10_000))
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, "the broker launcher did not return");
        }
    }

    internal static string DotnetHost()
    {
        string? self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            return self;
        }

        string? root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet")))
        {
            return Path.Combine(root, "dotnet");
        }

        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "dotnet");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return "/usr/share/dotnet/dotnet";
    }
}
