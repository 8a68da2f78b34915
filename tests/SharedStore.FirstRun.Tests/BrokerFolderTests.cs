using System.Diagnostics;
using System.Globalization;

namespace SharedStore.FirstRun.Tests;

/// <summary>
/// A broker starts from nothing: it makes every folder it writes into (socket, log, state) before it opens a file, with
/// the modes ARCHITECTURE §1 gives; it corrects the mode of its own folder, and refuses folders others could tamper with,
/// saying why — to its starter too (docs/ARCHITECTURE.md §1, "Folders"; issue 12).
/// </summary>
[TestFixture]
[NonParallelizable]
[Category("FirstRun")]
public sealed class BrokerFolderTests
{
    private const int UserMode = 0x1C0;   // 0700
    private const int SystemMode = 0x1ED; // 0755
    private string _root = "";

    [SetUp]
    public void MakeRoot() => _root = BrokerProcess.NewDirectory();

    [TearDown]
    public void RemoveRoot()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    [Test]
    public void Start_AnyCombinationOfMissingFolders_BrokerMakesThemAndServes(
        [Values] bool socketMissing, [Values] bool logMissing, [Values] bool stateMissing, [Values] bool system)
    {
        // Contract: whichever of the socket, log and state folders do not exist yet, the broker makes them (missing
        // parents too), 0700 — 0755 with --system — and then serves: the socket accepts, the pid file and the log exist.
        string socketDir = Prepared("run/a", socketMissing);
        string logDir = Prepared("logs/b", logMissing);
        string stateDir = Prepared("state/c", stateMissing);
        string log = Path.Combine(logDir, "broker.log");
        string[] args = ["--log", log, "--state-dir", stateDir, .. (system ? (string[])["--system"] : [])];

        using (var broker = BrokerProcess.StartOn(socketDir, waitReady: true, args))
        {
            int mode = system ? SystemMode : UserMode;
            foreach (var (dir, missing) in new[] { (socketDir, socketMissing), (logDir, logMissing), (stateDir, stateMissing) })
            {
                Assert.That(Directory.Exists(dir), Is.True, $"{dir} was not made; broker stderr:\n{broker.Stderr}");
                if (missing)
                {
                    Assert.That(Folders.Mode(dir), Is.EqualTo(mode), $"{dir}: a folder the broker made has its documented mode");
                    Assert.That(Folders.Mode(Path.GetDirectoryName(dir)!), Is.EqualTo(mode), $"{dir}'s parent, made too");
                }
            }

            Assert.That(File.Exists(broker.SocketPath + ".pid"), Is.True);

            // The socket accepts a moment before the broker logs that it does: wait for the line, do not race it.
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (!File.ReadAllText(log).Contains("listening on", StringComparison.Ordinal))
            {
                Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), "the log file is written");
                Thread.Sleep(20);
            }
        }
    }

    [Test]
    public void Start_DefaultSocketFolderWithWrongMode_ModeIsCorrected()
    {
        // Contract: the socket folder SharedStore names itself ($XDG_RUNTIME_DIR/sharedstore) is the broker's: an
        // existing one with another mode is set to 0700 (it was left 0777 before: anyone could replace the socket).
        string runtime = Prepared("xdg", missing: false);
        string own = Path.Combine(runtime, "sharedstore");
        Directory.CreateDirectory(own);
        File.SetUnixFileMode(own, (UnixFileMode)0x1FF); // 0777
        var env = new Dictionary<string, string> { ["XDG_RUNTIME_DIR"] = runtime };
        using var broker = BrokerProcess.StartOn(own, waitReady: true, env);
        Assert.That(Folders.Mode(own), Is.EqualTo(UserMode));
    }

    [Test]
    public void Start_DefaultSocketFolderOfAnotherUser_RefusedWithTheReason()
    {
        // Contract: a default socket folder that another user made (squatting /tmp/sharedstore-UID, or here
        // $XDG_RUNTIME_DIR/sharedstore) is refused, exit code 4, with the folder and its owner named.
        RequireRoot();
        string runtime = Prepared("xdg", missing: false);
        string own = Path.Combine(runtime, "sharedstore");
        Directory.CreateDirectory(own);
        Chown(own, ClientProcess.NobodyId);
        var env = new Dictionary<string, string> { ["XDG_RUNTIME_DIR"] = runtime };
        using var broker = BrokerProcess.StartOn(own, waitReady: false, env);
        Assert.That(broker.WaitForExit(TimeSpan.FromSeconds(30)), Is.EqualTo(4), broker.Stderr);
        Assert.That(broker.Stderr, Does.Contain(own).And.Contain("uid 65534"));
    }

    [Test]
    public void Start_ExplicitFolderOthersMayWrite_Refused()
    {
        // Contract: an existing folder given explicitly is left as it is, but one where other users could replace
        // the broker's files (world-writable, no sticky bit) is refused.
        string open = Prepared("open", missing: false);
        File.SetUnixFileMode(open, (UnixFileMode)0x1FF); // 0777, no sticky bit
        using var broker = BrokerProcess.StartOn(open, waitReady: false);
        Assert.That(broker.WaitForExit(TimeSpan.FromSeconds(30)), Is.EqualTo(4), broker.Stderr);
        Assert.That(broker.Stderr, Does.Contain("other users may write"));
    }

    [Test]
    public void Start_SocketFolderIsASymlink_Refused()
    {
        // Contract: the broker never follows a symbolic link in place of its own folder.
        string target = Prepared("elsewhere", missing: false);
        string runtime = Prepared("xdg", missing: false);
        string own = Path.Combine(runtime, "sharedstore");
        Directory.CreateSymbolicLink(own, target);
        var env = new Dictionary<string, string> { ["XDG_RUNTIME_DIR"] = runtime };
        using var broker = BrokerProcess.StartOn(own, waitReady: false, env);
        Assert.That(broker.WaitForExit(TimeSpan.FromSeconds(30)), Is.EqualTo(4), broker.Stderr);
        Assert.That(broker.Stderr, Does.Contain("symbolic link"));
    }

    [Test]
    public void StartBrokerIfMissing_BrokerRefusesItsFolder_ClientFailsAtOnceWithTheBrokersReason()
    {
        // Contract: when a client starts a broker and the broker exits, the client's BrokerUnavailable carries the
        // broker's exit code and its own words, at once — not a bare "No such file or directory" after the 15 s wait.
        RequireRoot();
        string runtime = Prepared("xdg", missing: false);
        string own = Path.Combine(runtime, "sharedstore");
        Directory.CreateDirectory(own);
        Chown(own, ClientProcess.NobodyId);
        var options = new SharedStoreClientOptions
        {
            SocketPath = Path.Combine(own, "broker.sock"),
            StartBrokerIfMissing = true,
            BrokerPath = ChildProcess.Dll("SharedStore.Broker.dll"),
            StartTimeout = TimeSpan.FromSeconds(60),
        };
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<SharedStoreException>(() => SharedStoreClient.Connect(options).Dispose())!;
        TestContext.Progress.WriteLine($"  refused after {sw.Elapsed.TotalSeconds:F1} s: {e.Message}");
        Assert.That(e.Code, Is.EqualTo(ErrorCode.BrokerUnavailable));
        Assert.That(e.Message, Does.Contain("exited with code 4").And.Contain("belongs to uid 65534"));
        Assert.That(sw.Elapsed, Is.LessThan(options.StartTimeout), "a broker that died must fail the start at once, not after the timeout");
    }

    [Test]
    public void StartBrokerIfMissing_BrokerRejectsItsArguments_ClientReportsExitCodeAndStderr()
    {
        // Contract: whatever makes the broker exit during its start reaches the client in its own words.
        string socketDir = Prepared("run", missing: true);
        var options = new SharedStoreClientOptions
        {
            SocketPath = Path.Combine(socketDir, "broker.sock"),
            StartBrokerIfMissing = true,
            BrokerPath = ChildProcess.Dll("SharedStore.Broker.dll"),
            StartTimeout = TimeSpan.FromSeconds(60),
        };
        options.BrokerArguments.Add("--memory-limit");
        options.BrokerArguments.Add("lots");
        var e = Assert.Throws<SharedStoreException>(() => SharedStoreClient.Connect(options).Dispose())!;
        Assert.That(e.Message, Does.Contain("exited with code 2").And.Contain("bad configuration"));
    }

    [Test]
    public void StartBrokerIfMissing_NothingExists_StartsDetachedBrokerThatOutlivesTheConnection()
    {
        // Contract: a client with StartBrokerIfMissing on a socket whose folder does not exist gets a working broker,
        // which makes the folder 0700, logs to SOCKET.log, and keeps serving after the client is gone.
        string socketDir = Prepared("run/deep", missing: true);
        string socket = Path.Combine(socketDir, "broker.sock");
        var options = new SharedStoreClientOptions { SocketPath = socket, StartBrokerIfMissing = true, BrokerPath = ChildProcess.Dll("SharedStore.Broker.dll") };
        int pid;
        using (var client = SharedStoreClient.Connect(options))
        {
            pid = client.BrokerPid;
            using var con = client.CreateContainer("first-run", SharedStoreClient.ProcessGroupId);
        }

        try
        {
            Assert.That(Folders.Mode(socketDir), Is.EqualTo(UserMode));
            Assert.That(File.ReadAllText(socket + ".log"), Does.Contain($"listening on {socket}"));
            using var again = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = socket });
            Assert.That(again.BrokerPid, Is.EqualTo(pid));
            Assert.That(Session(pid), Is.EqualTo(pid), "the broker leads a session of its own (setsid), out of reach of our terminal's signals");
        }
        finally
        {
            using var p = Process.GetProcessById(pid);
            p.Kill();
            p.WaitForExit(10_000);
        }
    }

    private string Prepared(string relative, bool missing)
    {
        string dir = Path.Combine(_root, relative);
        if (!missing)
        {
            Directory.CreateDirectory(dir);
            File.SetUnixFileMode(dir, (UnixFileMode)UserMode);
        }

        return dir;
    }

    private static int Session(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        string[] f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(f[3], CultureInfo.InvariantCulture); // state ppid pgrp session
    }

    private static void RequireRoot()
    {
        if (SharedStore.Tests.Harness.Interop.GetUid() != 0)
        {
            Assert.Ignore("needs root to make a folder owned by another user");
        }
    }

    private static void Chown(string path, int uid)
    {
        using var p = Process.Start("/bin/chown", [uid.ToString(CultureInfo.InvariantCulture), path]);
        p.WaitForExit(10_000);
        Assert.That(p.ExitCode, Is.Zero);
    }
}
