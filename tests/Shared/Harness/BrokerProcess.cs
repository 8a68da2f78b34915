using System.Diagnostics;
using System.Text;

namespace SharedStore.Tests.Harness;

/// <summary>
/// A real broker child process (<c>dotnet SharedStore.Broker.dll --socket DIR/broker.sock</c>) in its own temporary
/// directory (mode 0755). <see cref="Start"/> returns once a client can connect. Dispose stops it with SIGTERM, kills
/// it if it does not stop in time, and deletes the directory.
/// </summary>
internal sealed class BrokerProcess : IDisposable
{
    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(30);
    private readonly StringBuilder _stderr = new();
    private readonly bool _ownsDirectory;
    private Process? _process;

    private BrokerProcess(string directory, bool ownsDirectory)
    {
        Directory = directory;
        _ownsDirectory = ownsDirectory;
        SocketPath = Path.Combine(directory, "broker.sock");
    }

    public string Directory { get; }

    public string SocketPath { get; }

    public int Pid => _process?.Id ?? 0;

    public Process Process => _process ?? throw new InvalidOperationException("not started");

    public string Stderr => ChildProcess.Text(_stderr);

    /// <summary>A new temporary directory under /tmp, mode 0755 (so another user may reach a --system socket).</summary>
    public static string NewDirectory()
    {
        string dir = Path.Combine("/tmp", $"ss-itest-{Environment.ProcessId}-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        return dir;
    }

    /// <summary>Starts a broker in a new directory and waits until it accepts a connection.</summary>
    public static BrokerProcess Start(params string[] extraArgs) => Start(null, extraArgs);

    /// <summary>Starts a broker in a new directory, with extra environment variables (test hooks), and waits until it
    /// accepts a connection.</summary>
    public static BrokerProcess Start(IDictionary<string, string>? env, params string[] extraArgs)
    {
        var b = new BrokerProcess(NewDirectory(), ownsDirectory: true);
        try
        {
            b.Launch(extraArgs, env);
            b.WaitReady();
            return b;
        }
        catch
        {
            b.Dispose();
            throw;
        }
    }

    /// <summary>Starts a broker on another broker's socket path (the directory stays owned by the first).</summary>
    public static BrokerProcess StartOn(string directory, bool waitReady, params string[] extraArgs) =>
        StartOn(directory, waitReady, null, extraArgs);

    /// <summary>Starts a broker on another broker's socket path with extra environment variables.</summary>
    public static BrokerProcess StartOn(string directory, bool waitReady, IDictionary<string, string>? env, params string[] extraArgs)
    {
        var b = new BrokerProcess(directory, ownsDirectory: false);
        b.Launch(extraArgs, env);
        if (waitReady)
        {
            try
            {
                b.WaitReady();
            }
            catch
            {
                b.Dispose();
                throw;
            }
        }

        return b;
    }

    /// <summary>SIGKILL: the broker gets no chance to clean up (its socket file stays behind).</summary>
    public void Kill()
    {
        if (_process is not null)
        {
            ChildProcess.KillAndWait(_process);
        }
    }

    /// <summary>Waits for the broker to exit and returns its exit code, failing the test on timeout.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!Process.WaitForExit(timeout))
        {
            Assert.Fail($"broker pid {Pid} did not exit within {timeout}; stderr:\n{Stderr}");
        }

        Process.WaitForExit(); // drain the redirected streams
        return Process.ExitCode;
    }

    public void Dispose()
    {
        if (_process is not null)
        {
            if (ChildProcess.Signal(_process, ChildProcess.SigTerm) && !_process.WaitForExit(5_000))
            {
                TestContext.Progress.WriteLine($"broker pid {_process.Id} ignored SIGTERM for 5 s; killing it");
            }

            ChildProcess.KillAndWait(_process);
            _process.Dispose();
            _process = null;
        }

        if (_ownsDirectory)
        {
            try
            {
                System.IO.Directory.Delete(Directory, recursive: true);
            }
            catch (IOException)
            {
                // best effort: a leftover temp dir must not fail the test
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    private void Launch(string[] extraArgs, IDictionary<string, string>? env = null)
    {
        var argv = new List<string> { ChildProcess.DotnetHost, ChildProcess.Dll("SharedStore.Broker.dll"), "--socket", SocketPath };
        argv.AddRange(extraArgs);
        _process = ChildProcess.Start(argv, _stderr, env: env);
    }

    private void WaitReady()
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (Process.HasExited)
            {
                Process.WaitForExit();
                Assert.Fail($"broker exited with code {Process.ExitCode} before accepting connections; stderr:\n{Stderr}");
            }

            try
            {
                using var probe = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = SocketPath, RequestTimeout = TimeSpan.FromSeconds(5) });
                return;
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.BrokerUnavailable)
            {
                if (sw.Elapsed > s_startTimeout)
                {
                    Assert.Fail($"broker did not accept a connection within {s_startTimeout}: {e.Message}; stderr:\n{Stderr}");
                }

                Thread.Sleep(25);
            }
        }
    }
}
