using System.Diagnostics;
using SharedStore.Cli.Tests.Harness;

namespace SharedStore.Cli.Tests;

/// <summary>The inspection and transfer subcommands against one real broker process.</summary>
[TestFixture]
[Category("Cli")]
public sealed class CommandTests
{
    private BrokerProcess _broker = null!;

    private string Socket => _broker.SocketPath;

    [OneTimeSetUp]
    public void StartBroker() => _broker = BrokerProcess.Start();

    [OneTimeTearDown]
    public void StopBroker() => _broker.Dispose();

    [Test]
    public void Cli_UnknownCommand_ExitsWithUsageCode()
    {
        // Contract: a command line the parser rejects exits 2 with a message on stderr.
        var r = CliRunner.Run(Socket, "no-such-command");
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
        Assert.That(r.Stderr, Does.Contain("no-such-command"));
    }

    [Test]
    public void Cli_NoBroker_ExitsWithBrokerUnavailable()
    {
        // Contract: every command that needs a broker exits 3 when none answers.
        var r = CliRunner.Run(Path.Combine(_broker.Directory, "nobody-here.sock"), "ls");
        Assert.That(r.ExitCode, Is.EqualTo(3), r.ToString());
        Assert.That(r.Stderr, Does.Contain("broker start"));
    }

    [Test]
    public void Ls_ContainerWithMemberAndObject_ShowsGroupPolicyPidsAndSizes()
    {
        // Contract: ls lists each container's group, write policy, member pids and size, and each object's size and use count.
        using var a = ClientProcess.Start("A");
        a.Ok($"connect {Socket}");
        a.Ok($"create-container ls-con {SharedStoreClient.ProcessGroupId} creator-only");
        a.Ok("create-object ls-obj 12345");
        var r = CliRunner.Run(Socket, "ls");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string row = Line(r.Stdout, "ls-con");
        Assert.That(row, Does.Contain("creator only").And.Contain(a.Pid.ToString()).And.Contain($"({SharedStoreClient.ProcessGroupId})"));
        string obj = Line(r.Stdout, "ls-obj");
        Assert.That(obj, Does.Contain("12345"));
        Assert.That(obj.Split('│', StringSplitOptions.TrimEntries), Does.Contain("1"), "use count 1");
    }

    [Test]
    public void Holders_ReaderHoldsAndWriterWaits_ShowsReaderPidAndWaitingWriterPid()
    {
        // Contract: holders lists, per held block, the reading process and the writer waiting for it (pid and name).
        using var reader = ClientProcess.Start("reader");
        using var writer = ClientProcess.Start("writer");
        reader.Ok($"connect {Socket}");
        reader.Ok($"create-container h-con {SharedStoreClient.ProcessGroupId}");
        reader.Ok("create-object h-obj 3145728"); // 3 blocks of 1 MiB
        writer.Ok($"connect {Socket}");
        writer.Ok("join-container h-con");
        writer.Ok("join-object h-obj");

        var idle = CliRunner.Run(Socket, "holders", "h-con", "h-obj");
        Assert.That(idle.ExitCode, Is.EqualTo(0), idle.ToString());
        Assert.That(idle.Stdout, Does.Contain("is held or awaited"));

        string lease = reader.Ok("get h-obj 1048576 100 10000")[0]; // a read lease on block 1
        int write = writer.Send("write h-obj 1048576 4096 7 30000"); // waits for the lease
        writer.ExpectNoAnswerYet(write, because: "the reader holds block 1");

        CliResult r = null!;
        string row = "";
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(15))
        {
            r = CliRunner.Run(Socket, "holders", "h-con", "h-obj");
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            row = r.Stdout.Split('\n').FirstOrDefault(l => l.Contains($"pid {writer.Pid}", StringComparison.Ordinal)) ?? "";
            if (row.Length > 0)
            {
                break;
            }

            Thread.Sleep(100);
        }

        Assert.That(row, Is.Not.Empty, $"the waiting writer never showed up:\n{r}");
        TestContext.Progress.WriteLine(r.Stdout);
        string[] cells = row.Split('│', StringSplitOptions.TrimEntries);
        // │ block │ readers │ writer │ waiting writers │
        Assert.That(cells[1], Is.EqualTo("1"), "only block 1 is held");
        Assert.That(cells[2], Does.Contain($"pid {reader.Pid}"), "reader");
        Assert.That(cells[2], Does.Contain("dotnet"), "process name from /proc/PID/comm");
        Assert.That(cells[3], Is.EqualTo("-"), "nobody writes yet");
        Assert.That(cells[4], Does.Contain($"pid {writer.Pid}"), "waiting writer");
        Assert.That(r.Stdout.Split('\n').Count(l => l.Contains($"pid {reader.Pid}", StringComparison.Ordinal)), Is.EqualTo(1), "blocks nobody holds are not listed");

        reader.Ok($"put {lease}");
        writer.ExpectOk(write);
        var after = CliRunner.Run(Socket, "holders", "h-con", "h-obj");
        Assert.That(after.Stdout, Does.Contain("is held or awaited"), after.ToString());
    }

    [Test]
    public void Holders_MissingObject_ExitsNotFound()
    {
        // Contract: a container or object that does not exist exits 4.
        var r = CliRunner.Run(Socket, "holders", "no-con", "no-obj");
        Assert.That(r.ExitCode, Is.EqualTo(4), r.ToString());
    }

    [Test]
    public void PutGet_File_RoundTripsThroughAnObject()
    {
        // Contract: put creates the object with the file's size and imports it; get exports the same bytes.
        string dir = _broker.Directory;
        string input = Path.Combine(dir, "in.bin");
        string output = Path.Combine(dir, "out.bin");
        byte[] data = new byte[(3 << 20) + 4321];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(input, data);

        var put = CliRunner.Run(Socket, "put", input, "pg-con", "pg-obj", "--create-container");
        Assert.That(put.ExitCode, Is.EqualTo(0), put.ToString());
        var ls = CliRunner.Run(Socket, "ls");
        Assert.That(Line(ls.Stdout, "pg-obj"), Does.Contain(data.Length.ToString()));

        var get = CliRunner.Run(Socket, "get", "pg-con", "pg-obj", output);
        Assert.That(get.ExitCode, Is.EqualTo(0), get.ToString());
        Assert.That(File.ReadAllBytes(output), Is.EqualTo(data));

        var missingFile = CliRunner.Run(Socket, "put", Path.Combine(dir, "nope.bin"), "pg-con", "pg-obj");
        Assert.That(missingFile.ExitCode, Is.EqualTo(4), missingFile.ToString());
        var missingObject = CliRunner.Run(Socket, "get", "pg-con", "nope", output);
        Assert.That(missingObject.ExitCode, Is.EqualTo(4), missingObject.ToString());
        var missingContainer = CliRunner.Run(Socket, "put", input, "nope-con", "x");
        Assert.That(missingContainer.ExitCode, Is.EqualTo(4), missingContainer.ToString());
    }

    [Test]
    public void Stats_AfterRequests_ShowsOperationCountsAndBytes()
    {
        // Contract: stats prints the SharedStore.Broker instruments with their current values.
        using var a = ClientProcess.Start("A");
        a.Ok($"connect {Socket}");
        a.Ok($"create-container st-con {SharedStoreClient.ProcessGroupId}");
        a.Ok("create-object st-obj 4096");
        var r = CliRunner.Run(Socket, "stats");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Line(r.Stdout, "kind=container_create"), Does.Contain("sharedstore.broker.operations"));
        Assert.That(r.Stdout, Does.Contain("sharedstore.broker.object.bytes").And.Contain("sharedstore.broker.recovery.sessions"));
    }

    [Test]
    public void Stats_ClientKilledWhileHoldingALease_CountsRecovery()
    {
        // Contract: a client that dies holding a read lease is recovered, and the recovery counters say so.
        using var a = ClientProcess.Start("A");
        a.Ok($"connect {Socket}");
        a.Ok($"create-container rc-con {SharedStoreClient.ProcessGroupId}");
        a.Ok("create-object rc-obj 4096");
        a.Ok("get rc-obj 0 100 10000");
        double before = Value(CliRunner.Run(Socket, "stats").Stdout, "sharedstore.broker.recovery.lock_records");
        a.Kill();
        var sw = Stopwatch.StartNew();
        double after = before;
        while (after <= before && sw.Elapsed < TimeSpan.FromSeconds(15))
        {
            Thread.Sleep(100);
            after = Value(CliRunner.Run(Socket, "stats").Stdout, "sharedstore.broker.recovery.lock_records");
        }

        Assert.That(after, Is.GreaterThan(before), "released lock records counted");
    }

    [Test]
    public void Bench_List_RunsTheBenchmarkTool()
    {
        // Contract: bench passes its arguments to SharedStore.Bench and returns its exit code.
        var r = CliRunner.Run(Socket, "bench", "--list");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Stdout.Trim(), Is.Not.Empty);
    }

    private static string Line(string text, string containing) =>
        text.Split('\n').FirstOrDefault(l => l.Contains(containing, StringComparison.Ordinal))
            ?? throw new AssertionException($"no line contains '{containing}':\n{text}");

    private static double Value(string stats, string instrument)
    {
        string[] cells = Line(stats, instrument).Split('│', StringSplitOptions.TrimEntries);
        return double.Parse(cells[3], System.Globalization.CultureInfo.InvariantCulture);
    }
}
