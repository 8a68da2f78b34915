using System.Diagnostics;
using SharedStore.Protocol;

namespace SharedStore.Bench;

/// <summary>A real broker process for a scenario, on a socket in the bench work directory. Its stderr (the console
/// log) is kept, each line with the bench's clock at arrival, so a scenario can read what the broker reported.</summary>
internal sealed class BenchBroker : IDisposable
{
    private readonly Process _process;
    private readonly string[] _extraArgs;
    private readonly List<string> _log = [];

    public BenchBroker(BenchContext context, params string[] extraArgs)
        : this(Path.Combine(context.WorkDirectory, $"broker-{Guid.NewGuid():N}.sock"[..20] + ".sock"), extraArgs)
    {
    }

    private BenchBroker(string socketPath, string[] extraArgs)
    {
        SocketPath = socketPath;
        _extraArgs = extraArgs;
        string dll = Path.Combine(AppContext.BaseDirectory, "SharedStore.Broker.dll");
        var psi = new ProcessStartInfo(ChildProcess.DotnetHost()) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("--socket");
        psi.ArgumentList.Add(SocketPath);
        foreach (string a in extraArgs)
        {
            psi.ArgumentList.Add(a);
        }

        long t0 = Stopwatch.GetTimestamp();
        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_log)
                {
                    _log.Add(e.Data);
                }
            }
        };
        _process.OutputDataReceived += (_, _) => { };
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
        var sw = Stopwatch.StartNew();
        while (true)
        {
            using var s = SeqPacketSocket.TryConnect(SocketPath, out _);
            if (s is not null)
            {
                break;
            }

            if (sw.Elapsed > TimeSpan.FromSeconds(60) || _process.HasExited)
            {
                throw new InvalidOperationException($"the bench broker did not start:\n{string.Join('\n', LogLines())}");
            }

            Thread.Sleep(5);
        }

        StartTime = Stopwatch.GetElapsedTime(t0);
    }

    /// <summary>From the process start to the first accepted connection (polled every 5 ms).</summary>
    public TimeSpan StartTime { get; }

    public string SocketPath { get; }

    public int Pid => _process.Id;

    public SharedStoreClient Connect() => SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = SocketPath });

    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit(10_000);
    }

    /// <summary>A new broker on this one's socket with its arguments, and so on the same state directory: a restart
    /// (durable containers come back). Kill this one first; a live broker on the socket makes the new one exit.</summary>
    public BenchBroker StartAgain() => new(SocketPath, _extraArgs);

    /// <summary>The broker's stderr lines so far.</summary>
    public string[] LogLines()
    {
        lock (_log)
        {
            return [.. _log];
        }
    }

    public void Dispose() => ChildProcess.KillAndDispose(_process);
}

/// <summary>This tool run again as a child process in a role (<c>--child ROLE ARGS…</c>), talking line by line.</summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly Process _process;

    public ChildProcess(params string[] args)
    {
        string self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            psi.FileName = self;
            psi.ArgumentList.Add(typeof(ChildProcess).Assembly.Location);
        }
        else
        {
            psi.FileName = self;
        }

        psi.ArgumentList.Add("--child");
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { Console.Error.WriteLine($"  [child] {e.Data}"); } };
        _process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    public void Send(string line)
    {
        _process.StandardInput.WriteLine(line);
        _process.StandardInput.Flush();
    }

    /// <summary>The child's next stdout line; throws when it does not come within <paramref name="timeout"/>.</summary>
    public string Read(TimeSpan timeout)
    {
        var t = _process.StandardOutput.ReadLineAsync();
        if (!t.Wait(timeout) || t.Result is null)
        {
            throw new TimeoutException($"child {_process.Id} did not answer within {timeout}");
        }

        return t.Result;
    }

    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit(10_000);
    }

    public void Dispose() => ChildProcess.KillAndDispose(_process);

    /// <summary>Kills a child that is still running (waiting up to 5 s for it) and releases it.</summary>
    public static void KillAndDispose(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill();
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // it exited between the check and the kill
        }

        process.Dispose();
    }

    /// <summary>The dotnet host that runs framework-dependent dlls (the one the client library's launcher uses).</summary>
    public static string DotnetHost() => BrokerLauncher.DotnetHost();
}

internal static class Stats
{
    public static double Median(IEnumerable<double> xs)
    {
        var a = xs.OrderBy(x => x).ToArray();
        return a.Length == 0 ? double.NaN : a.Length % 2 == 1 ? a[a.Length / 2] : (a[(a.Length / 2) - 1] + a[a.Length / 2]) / 2;
    }

    public static double Percentile(IEnumerable<double> xs, double p)
    {
        var a = xs.OrderBy(x => x).ToArray();
        if (a.Length == 0)
        {
            return double.NaN;
        }

        int i = (int)Math.Ceiling((p / 100.0 * a.Length) - 1);
        return a[Math.Clamp(i, 0, a.Length - 1)];
    }

    public static double Us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;

    public static double Ns(long ticks) => ticks * 1e9 / Stopwatch.Frequency;
}
