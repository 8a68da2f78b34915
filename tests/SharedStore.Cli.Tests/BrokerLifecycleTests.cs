using System.Diagnostics;
using SharedStore.Cli.Tests.Harness;

namespace SharedStore.Cli.Tests;

/// <summary><c>sharedstore broker start|status|stop</c> against a broker the command itself starts.</summary>
[TestFixture]
[Category("Cli")]
public sealed class BrokerLifecycleTests
{
    private string _dir = "";
    private string _socket = "";

    [SetUp]
    public void SetUp()
    {
        _dir = BrokerProcess.NewDirectory();
        _socket = Path.Combine(_dir, "broker.sock");
    }

    [TearDown]
    public void TearDown()
    {
        // A failed test must not leave a detached broker behind: SIGKILL whatever the pid file names.
        if (File.Exists(_socket + ".pid") && int.TryParse(File.ReadAllText(_socket + ".pid").Trim(), out int pid))
        {
            try
            {
                using var p = Process.GetProcessById(pid);
                p.Kill();
                p.WaitForExit(5_000);
            }
            catch (ArgumentException)
            {
            }
            catch (InvalidOperationException)
            {
            }
        }

        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Test]
    public void Broker_StartOnAFolderItMayNotUse_FailsAtOnceWithTheBrokersReason()
    {
        // Contract (issue 12): `broker start` whose broker exits during its start fails at once with exit 3 and the
        // broker's own reason (its exit code and last words), instead of waiting out --timeout and pointing at a log.
        File.SetUnixFileMode(_dir, (UnixFileMode)0x1FF); // 0777 without the sticky bit: others could swap the socket
        var sw = Stopwatch.StartNew();
        var start = CliRunner.Run(_socket, "broker", "start", "--timeout", "60");
        Assert.That(start.ExitCode, Is.EqualTo(3), start.ToString());
        Assert.That(start.Stdout + start.Stderr, Does.Contain("exited with code 4").And.Contain("other users may write"));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(45)), "a broker that died must fail the start at once");
    }

    [Test]
    public void Broker_StartStatusStop_RunsInBackgroundAndStopsGracefully()
    {
        // Contract: start returns once the socket accepts and leaves a pid file and a log; status reports it; stop sends
        // SIGTERM and returns once the broker exited and removed its socket; status then exits 3 (broker unavailable).
        var before = CliRunner.Run(_socket, "broker", "status");
        Assert.That(before.ExitCode, Is.EqualTo(3), before.ToString());
        Assert.That(before.Stdout, Does.Contain("not running"));

        var start = CliRunner.Run(_socket, "broker", "start");
        Assert.That(start.ExitCode, Is.EqualTo(0), start.ToString());
        Assert.That(File.Exists(_socket), Is.True, "socket");
        Assert.That(File.Exists(_socket + ".pid"), Is.True, "pid file");
        Assert.That(File.Exists(_socket + ".log"), Is.True, "log file");
        string pid = File.ReadAllText(_socket + ".pid").Trim();
        Assert.That(start.Stdout, Does.Contain($"pid {pid}"));

        var again = CliRunner.Run(_socket, "broker", "start");
        Assert.That(again.ExitCode, Is.EqualTo(0), again.ToString());
        Assert.That(again.Stdout, Does.Contain("already running"));

        var status = CliRunner.Run(_socket, "broker", "status");
        Assert.That(status.ExitCode, Is.EqualTo(0), status.ToString());
        Assert.That(status.Stdout, Does.Contain("running").And.Contain(pid).And.Contain("uptime").And.Contain("bytes in use"));

        var stop = CliRunner.Run(_socket, "broker", "stop", "--timeout", "20");
        Assert.That(stop.ExitCode, Is.EqualTo(0), stop.ToString());
        Assert.That(File.Exists(_socket), Is.False, "the socket is gone after stop");
        Assert.That(File.ReadAllText(_socket + ".log"), Does.Contain("BrokerListening").And.Contain("BrokerStopping"), "log file records start and graceful stop");

        var after = CliRunner.Run(_socket, "broker", "status");
        Assert.That(after.ExitCode, Is.EqualTo(3), after.ToString());
        var stopAgain = CliRunner.Run(_socket, "broker", "stop");
        Assert.That(stopAgain.ExitCode, Is.EqualTo(3), stopAgain.ToString());
    }

    [Test]
    public void Broker_ConfigFileAndEnvironment_AreRead()
    {
        // Contract: the broker reads sharedstore.json given with --config, and SHAREDSTORE_* variables override it.
        string config = Path.Combine(_dir, "sharedstore.json");
        File.WriteAllText(config, "{ \"MemoryLimit\": 123456789, \"LogLevel\": \"Debug\" }");
        using var broker = BrokerProcess.StartOn(_dir, waitReady: true, "--config", config);
        var status = CliRunner.Run(_socket, "broker", "status");
        Assert.That(status.ExitCode, Is.EqualTo(0), status.ToString());
        Assert.That(status.Stdout, Does.Contain("123456789"), "memory limit from the config file");
    }

    [Test]
    public void Broker_Configuration_CommandLineBeatsEnvironmentBeatsFile()
    {
        // Contract: precedence is config file < SHAREDSTORE_* environment < command line.
        string config = Path.Combine(_dir, "sharedstore.json");
        File.WriteAllText(config, "{ \"MemoryLimit\": 111111111 }");
        var env = new Dictionary<string, string>(StringComparer.Ordinal) { ["SHAREDSTORE_MEMORYLIMIT"] = "222222222" };
        using (var broker = BrokerProcess.StartOn(_dir, waitReady: true, env, "--config", config))
        {
            var status = CliRunner.Run(_socket, "broker", "status");
            Assert.That(status.Stdout, Does.Contain("222222222").And.Not.Contain("111111111"), status.ToString());
        }

        using (var broker = BrokerProcess.StartOn(_dir, waitReady: true, env, "--config", config, "--memory-limit", "333333333"))
        {
            var status = CliRunner.Run(_socket, "broker", "status");
            Assert.That(status.Stdout, Does.Contain("333333333"), status.ToString());
        }
    }

    [Test]
    public void Broker_BadArgument_ExitsWithUsageCode()
    {
        // Contract: the broker keeps its exit code 2 for a bad argument.
        var r = CliRunner.RunRaw([ChildProcess.Dll("SharedStore.Broker.dll"), "--no-such-flag"]);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
    }
}
