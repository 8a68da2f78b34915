using System.Diagnostics;
using SharedStore.Protocol;

namespace SharedStore.CrashSafety.Tests;

/// <summary>A real broker process on a private socket; killed (SIGKILL) or stopped (SIGTERM) by the test.</summary>
internal sealed class BrokerProcess : IDisposable
{
    private readonly Process _process;
    private readonly System.Text.StringBuilder _log = new();

    private BrokerProcess(string socketPath, Process process)
    {
        SocketPath = socketPath;
        _process = process;
    }

    public string SocketPath { get; }

    public int Pid => _process.Id;

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    public static BrokerProcess Start(string? socketPath = null, params string[] extraArgs)
    {
        socketPath ??= Path.Combine(Directory.CreateTempSubdirectory("ss-crash-").FullName, "broker.sock");
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "SharedStore.Broker.dll"));
        psi.ArgumentList.Add("--socket");
        psi.ArgumentList.Add(socketPath);
        foreach (string a in extraArgs)
        {
            psi.ArgumentList.Add(a);
        }

        var p = Process.Start(psi)!;
        var b = new BrokerProcess(socketPath, p);
        p.ErrorDataReceived += (_, e) => { lock (b._log) { b._log.AppendLine(e.Data); } };
        p.OutputDataReceived += (_, e) => { lock (b._log) { b._log.AppendLine(e.Data); } };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        var sw = Stopwatch.StartNew();
        while (true)
        {
            using (var s = SeqPacketSocket.TryConnect(socketPath, out _))
            {
                if (s is not null)
                {
                    return b;
                }
            }

            if (p.HasExited || sw.Elapsed > TimeSpan.FromSeconds(30))
            {
                b.Dispose();
                throw new InvalidOperationException($"broker did not start: {b.Log}");
            }

            Thread.Sleep(20);
        }
    }

    public SharedStoreClient Connect() => SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = SocketPath });

    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit(10_000);
    }

    public bool HasExited => _process.HasExited;

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
        }

        _process.Dispose();
    }
}

/// <summary>A torture worker process (SharedStore.TortureWorker) and what it reported.</summary>
internal sealed class WorkerProcess : IDisposable
{
    private readonly Process _process;
    private long _progress;
    private volatile bool _ready;
    private volatile string? _failure;

    public WorkerProcess(string socket, string container, string obj, int seed)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "SharedStore.TortureWorker.dll"));
        foreach (string a in new[] { socket, container, obj, seed.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        Pid = _process.Id;
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            if (e.Data == "ready")
            {
                _ready = true;
            }
            else if (e.Data.StartsWith("p ", StringComparison.Ordinal))
            {
                Interlocked.Exchange(ref _progress, long.Parse(e.Data[2..], System.Globalization.CultureInfo.InvariantCulture));
            }
            else if (e.Data.StartsWith("FAIL", StringComparison.Ordinal))
            {
                _failure = e.Data;
            }
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (!string.IsNullOrEmpty(e.Data) && !Killed)
            {
                _failure ??= "stderr: " + e.Data;
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Pid { get; }

    public bool Ready => _ready;

    public long Progress => Interlocked.Read(ref _progress);

    public bool Killed { get; private set; }

    /// <summary>A failure it reported, or its unexpected exit.</summary>
    public string? Failure => _failure ?? (!Killed && _process.HasExited ? $"worker {Pid} exited with {_process.ExitCode}" : null);

    /// <summary>kill -9.</summary>
    public void Kill()
    {
        Killed = true;
        try
        {
            _process.Kill();
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
        }
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
