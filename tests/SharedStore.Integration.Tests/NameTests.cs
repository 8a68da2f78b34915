using System.Text;
using SharedStore.Protocol;

namespace SharedStore.Integration.Tests;

/// <summary>
/// Issue 13, finding 7: names are exact. Two different byte strings never name the same container or object: the broker
/// refuses names (and every other string field) that are not valid UTF-8, and enum fields holding a number the schema
/// does not name, with InvalidArgument; the client library refuses .NET strings that are not valid UTF-16. The frames
/// are built by hand (WireMessage), because the generated types can carry neither.
/// </summary>
public sealed class NameTests : CrossProcessTest
{
    // Request body fields (sharedstore.proto).
    private const int Hello = 10, ContainerCreate = 11, ContainerJoin = 12, ObjectCreate = 15, ObjectJoin = 16, Holders = 21;

    /// <summary>'Z' followed by bytes that are not UTF-8: a lone byte, a continuation byte, overlong forms, an encoded
    /// surrogate, a code point above U+10FFFF, a truncated sequence.</summary>
    private static readonly byte[][] s_invalid =
    [
        [0x5A, 0xFF], [0x5A, 0xFE], [0x5A, 0x80], [0x5A, 0xC0, 0x80], [0x5A, 0xC1, 0xBF], [0x5A, 0xE0, 0x80, 0xAF],
        [0x5A, 0xED, 0xA0, 0x80], [0x5A, 0xF4, 0x90, 0x80, 0x80], [0x5A, 0xE2, 0x82],
    ];

    private static readonly byte[] s_replacement = [0x5A, 0xEF, 0xBF, 0xBD]; // 'Z' U+FFFD: valid, a name like any other

    private ulong _id = 1;

    [Test]
    public void ContainerAndObjectNames_NotUtf8_RefusedWithInvalidArgumentAndNeverCollide()
    {
        // Contract: container_create, container_join, object_create, object_join and holders refuse a name that is
        // not valid UTF-8 with InvalidArgument, and create nothing; so 'Z' 0xFF, 'Z' 0xFE and 'Z' U+FFFD never name
        // the same container (protobuf's string decoding used to make all three 'Z' U+FFFD). The connection stays usable.
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);

        var created = Call(raw, ContainerCreate, new WireMessage().Bytes(1, s_replacement).Varint(2, SharedStoreClient.ProcessGroupId));
        Assert.That(created.Error, Is.EqualTo(Protocol.ErrorCode.Ok), created.Message);
        uint cid = created.Container.ContainerId;
        Assert.That(Call(raw, ObjectCreate, new WireMessage().Varint(1, cid).Bytes(2, s_replacement).Varint(3, 4096)).Error, Is.EqualTo(Protocol.ErrorCode.Ok));

        foreach (byte[] name in s_invalid)
        {
            string hex = Convert.ToHexString(name);
            AssertInvalid(Call(raw, ContainerCreate, new WireMessage().Bytes(1, name).Varint(2, SharedStoreClient.ProcessGroupId)), $"container_create {hex}");
            AssertInvalid(Call(raw, ContainerJoin, new WireMessage().Bytes(1, name)), $"container_join {hex}");
            AssertInvalid(Call(raw, ObjectCreate, new WireMessage().Varint(1, cid).Bytes(2, name).Varint(3, 4096)), $"object_create {hex}");
            AssertInvalid(Call(raw, ObjectJoin, new WireMessage().Varint(1, cid).Bytes(2, name)), $"object_join {hex}");
            AssertInvalid(Call(raw, Holders, new WireMessage().Bytes(1, name).Bytes(2, s_replacement)), $"holders container {hex}");
            AssertInvalid(Call(raw, Holders, new WireMessage().Bytes(1, s_replacement).Bytes(2, name)), $"holders object {hex}");
        }

        // A durable path is a name too: the broker would otherwise create files in a folder the caller did not name.
        AssertInvalid(Call(raw, ContainerCreate, new WireMessage().Bytes(1, "durable"u8.ToArray()).Varint(2, SharedStoreClient.ProcessGroupId)
            .Bytes(5, [.. "/tmp/x"u8, 0xFF])), "container_create durable_path");

        // Exactly what was created exists, under exactly its name; the connection still answers.
        var list = raw.Call(new Request { List = new ListRequest() });
        Assert.That(list.List.Containers.Select(c => c.Info.Name), Is.EqualTo(new[] { "Z\uFFFD" }));
        Assert.That(list.List.Containers[0].Objects.Select(o => o.Info.Name), Is.EqualTo(new[] { "Z\uFFFD" }));
        Assert.That(Call(raw, ObjectJoin, new WireMessage().Varint(1, cid).Bytes(2, s_replacement)).Error, Is.EqualTo(Protocol.ErrorCode.Ok));
    }

    [Test]
    public void WritePolicy_UnknownNumber_RefusedWithInvalidArgument()
    {
        // Contract: container_create refuses a write policy the schema does not name (proto3 enums keep any number)
        // with InvalidArgument, and creates nothing.
        using var broker = StartBroker();
        using var raw = RawConnection.OpenWithHello(broker.SocketPath);
        foreach (long policy in new long[] { 2, 7, int.MaxValue, -1 })
        {
            AssertInvalid(Call(raw, ContainerCreate, new WireMessage().Bytes(1, "policy"u8.ToArray()).Varint(2, SharedStoreClient.ProcessGroupId).Varint(3, policy)),
                $"write_policy {policy}");
        }

        Assert.That(raw.Call(new Request { List = new ListRequest() }).List.Containers, Is.Empty);
        var ok = Call(raw, ContainerCreate, new WireMessage().Bytes(1, "policy"u8.ToArray()).Varint(2, SharedStoreClient.ProcessGroupId).Varint(3, 1));
        Assert.That(ok.Error, Is.EqualTo(Protocol.ErrorCode.Ok), ok.Message);
        Assert.That(ok.Container.WritePolicy, Is.EqualTo(Protocol.WritePolicy.CreatorOnly));
    }

    [Test]
    public void Hello_ClientNameNotUtf8_RefusedWithInvalidArgumentAndClosed()
    {
        // Contract: the strictness covers every string field, the hello's client name included; a refused hello
        // closes the connection like any other.
        using var broker = StartBroker();
        using var raw = RawConnection.Open(broker.SocketPath);
        var r = Call(raw, Hello, new WireMessage().Varint(1, ProtocolConstants.ProtocolVersion).Bytes(2, [0x41, 0xFF]));
        AssertInvalid(r, "hello client_name");
        raw.ExpectClosed();
    }

    [Test]
    public void ClientLibrary_NameNotValidUtf16_ThrowsArgumentExceptionAndSendsNothing()
    {
        // Contract: a .NET string with a lone surrogate cannot be encoded as UTF-8 without changing it (the encoder
        // would write U+FFFD), so the library refuses it with ArgumentException before anything reaches the broker;
        // a surrogate pair is a character like any other.
        using var broker = StartBroker();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(10) });
        long gid = SharedStoreClient.ProcessGroupId;
        Assert.Throws<ArgumentException>(() => client.CreateContainer("Z\uD800", gid));
        Assert.Throws<ArgumentException>(() => client.CreateContainer("\uDC00Z", gid));
        Assert.Throws<ArgumentException>(() => client.JoinContainer("Z\uDBFF"));
        Assert.Throws<ArgumentException>(() => client.CreateContainer("durable", gid, new ContainerOptions { DurablePath = "/tmp/\uD800" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => client.CreateContainer("policy", gid, new ContainerOptions { WritePolicy = (WritePolicy)7 }));
        Assert.Throws<ArgumentException>(() => SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, ClientName = "a\uD800" }).Dispose());

        using var con = client.CreateContainer("Z\uFFFD\U0001F600", gid);
        Assert.Throws<ArgumentException>(() => con.CreateObject("o\uDE00", 4096));
        Assert.Throws<ArgumentException>(() => con.JoinObject("o\uD83D"));
        using var obj = con.CreateObject("o\U0001F600", 4096);

        var entry = client.ListRaw().Containers.Single();
        Assert.That(entry.Info.Name, Is.EqualTo("Z\uFFFD\U0001F600"), "only the valid name was created");
        Assert.That(entry.Objects.Select(o => o.Info.Name), Is.EqualTo(new[] { "o\U0001F600" }));
        Assert.That(Encoding.UTF8.GetBytes(entry.Info.Name), Is.EqualTo(new byte[] { 0x5A, 0xEF, 0xBF, 0xBD, 0xF0, 0x9F, 0x98, 0x80 }));
    }

    private Response Call(RawConnection raw, int body, WireMessage message)
    {
        ulong id = _id++;
        return raw.CallFrame(id, WireMessage.Request(id, body, message));
    }

    private static void AssertInvalid(Response r, string what) =>
        Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.InvalidArgument), $"{what}: {r.Error} {r.Message}");
}
