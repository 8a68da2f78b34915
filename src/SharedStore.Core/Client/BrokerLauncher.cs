using System.Diagnostics;
using System.Globalization;
using SharedStore.Protocol;

namespace SharedStore;

/// <summary>
/// Starts a broker in the background for a client (<see cref="SharedStoreClientOptions.StartBrokerIfMissing"/>) or for
/// <c>sharedstore broker start</c>, and waits until it accepts connections.
/// <para>The broker runs as this process's child with <c>--detach</c>: it calls <c>setsid()</c> at once (so no
/// terminal signal of ours reaches it and it outlives us), its stdin and stdout are /dev/null, and its stderr is a pipe
/// to us until it is ready; then it points its stdio at /dev/null, so it holds none of our pipes. Being its parent is
/// what lets us tell <i>why</i> a start failed: the broker's exit code and the last lines it wrote to stderr (its
/// refusal, or the runtime's unhandled-exception report), or of its log file. A broker that dies during its start fails
/// the call at once rather than after the timeout. A broker that exits with code 3 lost the race to another broker
/// started at the same moment for the same socket (another client did the same): that one is waited for instead.</para>
/// </summary>
internal static class BrokerLauncher
{
    /// <summary>Exit code of a broker that found another live broker on its socket.</summary>
    public const int ExitAnotherBroker = 3;

    private const int TailLines = 12;

    /// <summary>Starts a broker for <paramref name="socketPath"/> and returns once it accepts connections.</summary>
    /// <exception cref="SharedStoreException">BrokerUnavailable, with the broker's own reason, when the broker to start
    /// is missing, exited during its start, or did not accept within <paramref name="timeout"/>.</exception>
    public static void Start(string socketPath, SharedStoreClientOptions options, TimeSpan timeout)
    {
        string broker = options.BrokerPath
            ?? Environment.GetEnvironmentVariable("SHAREDSTORE_BROKER")
            ?? Path.Combine(AppContext.BaseDirectory, "SharedStore.Broker.dll");
        if (!File.Exists(broker))
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, $"no broker is running at {socketPath} and the broker to start was not found at {broker}");
        }

        string log = socketPath + ".log";
        // sh only to put stdin and stdout on /dev/null: `exec` replaces it, so the child's pid is the broker's.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec \"$@\" </dev/null >/dev/null");
        psi.ArgumentList.Add("sharedstore-launch");
        if (broker.EndsWith(".dll", StringComparison.Ordinal))
        {
            psi.ArgumentList.Add(DotnetHost());
        }

        psi.ArgumentList.Add(broker);
        foreach (string a in (string[])["--socket", socketPath, "--log", log, "--detach", .. options.BrokerArguments])
        {
            psi.ArgumentList.Add(a);
        }

        var stderr = new Queue<string>();
        using var p = new Process { StartInfo = psi };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (stderr)
                {
                    stderr.Enqueue(line);
                    if (stderr.Count > TailLines)
                    {
                        stderr.Dequeue();
                    }
                }
            }
        };
        try
        {
            p.Start();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, $"could not start the broker {broker}: {e.Message}", e);
        }

        p.BeginErrorReadLine();
        var sw = Stopwatch.StartNew();
        bool lostRace = false;
        while (true)
        {
            using (var s = SeqPacketSocket.TryConnect(socketPath, out _))
            {
                if (s is not null)
                {
                    return;
                }
            }

            if (!lostRace && p.WaitForExit(20))
            {
                p.WaitForExit(); // the stderr pipe is drained
                if (p.ExitCode != ExitAnotherBroker)
                {
                    throw new SharedStoreException(ErrorCode.BrokerUnavailable, string.Create(CultureInfo.InvariantCulture,
                        $"the broker started for {socketPath} exited with code {p.ExitCode} before accepting connections{LastWords(stderr, log)}"));
                }

                lostRace = true; // another broker holds the socket's lock: wait for that one to accept
            }
            else if (lostRace)
            {
                Thread.Sleep(20);
            }

            if (sw.Elapsed >= timeout)
            {
                string who = lostRace ? "another broker holds its lock but" : string.Create(CultureInfo.InvariantCulture, $"the broker (pid {p.Id}) is running but");
                throw new SharedStoreException(ErrorCode.BrokerUnavailable, string.Create(CultureInfo.InvariantCulture,
                    $"no broker accepted connections at {socketPath} within {timeout.TotalSeconds:0.#} s: {who} did not answer{LastWords(stderr, log)}"));
            }
        }
    }

    /// <summary>The last lines the broker wrote to stderr, else of its log file: its own words for what went wrong.</summary>
    private static string LastWords(Queue<string> stderr, string log)
    {
        string[] lines;
        lock (stderr)
        {
            lines = [.. stderr];
        }

        if (lines.Length == 0)
        {
            try
            {
                lines = [.. File.ReadLines(log).TakeLast(TailLines)];
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return "; it wrote nothing to stderr and has no log at " + log;
            }

            if (lines.Length == 0)
            {
                return "; it wrote nothing to stderr or to " + log;
            }

            return $"; the last lines of {log}:{Environment.NewLine}{string.Join(Environment.NewLine, lines)}";
        }

        return $"; its stderr:{Environment.NewLine}{string.Join(Environment.NewLine, lines)}";
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
