using System.Diagnostics;
using SharedStore.Protocol;

namespace SharedStore.CrashSafety.Tests;

/// <summary>Connecting a client of this test process to a harness broker.</summary>
internal static class BrokerProcessExtensions
{
    public static SharedStoreClient Connect(this BrokerProcess broker) =>
        SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
}

/// <summary>What the crash tests observe of a live broker instead of sleeping until "the other side waits now".</summary>
internal static class BrokerObservations
{
    /// <summary>Whether block <paramref name="block"/> of the object has an owner that is not active yet: a writer that
    /// holds the block and waits for its readers to drain (read by the broker from the lock record, `holders`).</summary>
    public static bool WriterWaitsForReaders(SharedStoreClient client, string container, string obj, long block)
    {
        var reply = client.Call(new Request { Holders = new HoldersRequest { ContainerName = container, ObjectName = obj } }, TimeSpan.FromSeconds(10), default).Response.Holders;
        return reply.Blocks.Any(b => (long)b.Block == block && b.Writer is { Active: false });
    }

    /// <summary>Whether a destroy of container <paramref name="container"/> has started waiting: the broker then refuses
    /// joins with Destroyed. The probe is a second join by <paramref name="member"/>, which is refused either way
    /// (AlreadyExists before the destroy), so it changes nothing.</summary>
    public static bool ContainerDestroyPending(SharedStoreClient member, string container)
    {
        try
        {
            member.JoinContainer(container).Dispose();
            Assert.Fail($"a second join of '{container}' by one of its members was accepted");
            return false;
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.AlreadyExists)
        {
            return false;
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.Destroyed)
        {
            return true;
        }
    }

    /// <summary>Polls <paramref name="condition"/> every 5 ms; fails the test after 30 s.</summary>
    public static void WaitUntil(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), $"timed out waiting for {what}");
            Thread.Sleep(5);
        }
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
