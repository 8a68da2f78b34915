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
}
