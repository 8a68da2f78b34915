using System.Diagnostics;
using System.Text;
using SharedStore.TestClient;

namespace SharedStore.Integration.Tests;

/// <summary>The seed's reader/writer example between two real client processes.</summary>
public sealed class ExchangeTests : CrossProcessTest
{
    private const long PayloadBytes = 64L << 20;

    [Test]
    public void ReaderWriter_64MiBPayload_ReaderSeesTheWritersBytes()
    {
        // Contract: object_write by one process is visible, byte for byte, to object_get of another process that joined
        // the container and object by name; then object_destroy and container_destroy succeed once the reader left.
        using var broker = StartBroker();
        var writer = Connect(broker, "writer");
        var reader = Connect(broker, "reader");
        long gid = SharedStoreClient.ProcessGroupId;

        writer.Ok($"create-container con {gid}");
        writer.Ok($"create-object A {PayloadBytes}");
        string written = writer.Ok($"write-pattern A 0 {PayloadBytes} 42 60000")[0];

        reader.Ok("join-container con");
        var joined = reader.Ok("join-object A");
        Assert.That(ClientProcess.Field(joined, "size"), Is.EqualTo(PayloadBytes.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        string read = reader.Ok($"read A 0 {PayloadBytes}")[0];

        byte[] expected = new byte[PayloadBytes];
        Payload.Fill(expected, 0, 42);
        string expectedChecksum = Payload.Format(Payload.Checksum(expected));
        Assert.That(written, Is.EqualTo(expectedChecksum), "the writer wrote another payload than the test computed");
        Assert.That(read, Is.EqualTo(expectedChecksum), "the reader saw other bytes than the writer wrote");

        reader.Ok("leave-object A");
        reader.Ok("leave-container");
        writer.Ok("destroy-object A 10000");
        writer.Ok("destroy-container 10000");
        reader.Err("join-container con", "NotFound");
    }

    [Test]
    public void ReaderWriterSample_WriterAndReaderRoles_BothExitZero()
    {
        // Contract: the sample's writer() and reader() roles, as two processes on one broker, exchange a 64 MiB
        // checksummed payload: the reader verifies the checksum (exit 0) and the writer's destroys complete (exit 0).
        using var broker = StartBroker();
        var env = new Dictionary<string, string>(StringComparer.Ordinal) { ["SHAREDSTORE_SOCKET"] = broker.SocketPath };
        string dll = ChildProcess.Dll("ReaderWriter.dll");
        var readerLog = new StringBuilder();
        var writerLog = new StringBuilder();
        void Log(StringBuilder sb, string line)
        {
            lock (sb)
            {
                sb.AppendLine(line);
            }
        }

        using var reader = ChildProcess.Start([ChildProcess.DotnetHost, dll, "reader", "sample"], readerLog, l => Log(readerLog, l), env);
        using var writer = ChildProcess.Start([ChildProcess.DotnetHost, dll, "writer", "sample", "64"], writerLog, l => Log(writerLog, l), env);
        try
        {
            bool done = writer.WaitForExit(120_000) & reader.WaitForExit(120_000);
            Assert.That(done, Is.True, $"the sample did not finish in 120 s.\nwriter:\n{ChildProcess.Text(writerLog)}\nreader:\n{ChildProcess.Text(readerLog)}");
            writer.WaitForExit();
            reader.WaitForExit();
            string logs = $"writer:\n{ChildProcess.Text(writerLog)}\nreader:\n{ChildProcess.Text(readerLog)}";
            Assert.That(reader.ExitCode, Is.Zero, logs);
            Assert.That(writer.ExitCode, Is.Zero, logs);
            Assert.That(ChildProcess.Text(readerLog), Does.Contain("verified"), logs);
        }
        finally
        {
            ChildProcess.KillAndWait(writer);
            ChildProcess.KillAndWait(reader);
        }
    }

    [Test]
    public void ReaderWriterSample_BrokerKilledWhileTheReaderWaits_ReaderSurvivesWithTheSameClient()
    {
        // Contract (issue 13, finding 8: the sample survives a broker restart): the reader waits for the container; the
        // broker is killed; the reader's client connects again on its next call — starting a broker, as the sample's
        // options ask — and the writer, started afterwards, meets it there; the reader verifies the payload.
        using var broker = StartBroker();
        var env = new Dictionary<string, string>(StringComparer.Ordinal) { ["SHAREDSTORE_SOCKET"] = broker.SocketPath };
        string dll = ChildProcess.Dll("ReaderWriter.dll");
        var readerLog = new StringBuilder();
        var writerLog = new StringBuilder();
        var waiting = new ManualResetEventSlim();
        using var reader = ChildProcess.Start([ChildProcess.DotnetHost, dll, "reader", "restart"], readerLog, l =>
        {
            lock (readerLog)
            {
                readerLog.AppendLine(l);
            }

            if (l.Contains("waiting for container", StringComparison.Ordinal))
            {
                waiting.Set();
            }
        }, env);
        Process? writer = null;
        int restartedPid = 0;
        try
        {
            Assert.That(waiting.Wait(TimeSpan.FromSeconds(60)), Is.True, $"the reader never started waiting:\n{ChildProcess.Text(readerLog)}");
            int firstPid = broker.Pid;
            broker.Kill();

            // The reader's next poll finds no broker and starts one (SharedStoreClientOptions.StartBrokerIfMissing).
            var sw = Stopwatch.StartNew();
            while (restartedPid == 0 || restartedPid == firstPid)
            {
                Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)), $"no broker came back:\n{ChildProcess.Text(readerLog)}");
                Thread.Sleep(20);
                restartedPid = ReadPid(broker.SocketPath + ".pid");
            }

            writer = ChildProcess.Start([ChildProcess.DotnetHost, dll, "writer", "restart", "8"], writerLog, l => { lock (writerLog) { writerLog.AppendLine(l); } }, env);
            bool done = writer.WaitForExit(120_000) & reader.WaitForExit(120_000);
            string logs = $"writer:\n{ChildProcess.Text(writerLog)}\nreader:\n{ChildProcess.Text(readerLog)}";
            Assert.That(done, Is.True, logs);
            writer.WaitForExit();
            reader.WaitForExit();
            Assert.That(reader.ExitCode, Is.Zero, logs);
            Assert.That(writer.ExitCode, Is.Zero, logs);
            Assert.That(ChildProcess.Text(readerLog), Does.Contain("verified").And.Contain($"broker pid {restartedPid}"), logs);
        }
        finally
        {
            if (writer is not null)
            {
                ChildProcess.KillAndWait(writer);
            }

            ChildProcess.KillAndWait(reader);
            if (restartedPid > 0)
            {
                try
                {
                    using var p = Process.GetProcessById(restartedPid);
                    p.Kill();
                    p.WaitForExit(10_000);
                }
                catch (ArgumentException)
                {
                    // gone already
                }
            }
        }
    }

    private static int ReadPid(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) ? pid : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
