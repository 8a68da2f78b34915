using System.Diagnostics;

namespace SharedStore.CrashSafety.Tests;

/// <summary>Connecting a client of this test process to a harness broker.</summary>
internal static class BrokerProcessExtensions
{
    public static SharedStoreClient Connect(this BrokerProcess broker) =>
        SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
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
