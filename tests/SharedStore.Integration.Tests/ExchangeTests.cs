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
}
