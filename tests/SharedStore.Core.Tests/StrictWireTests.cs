using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.Core.Tests;

/// <summary>StrictWire: the UTF-8 and enum checks protobuf's parser does not make, at any depth of a request.</summary>
[TestFixture]
public class StrictWireTests
{
    private static byte[] Frame(Action<CodedOutputStream> body)
    {
        using var inner = new MemoryStream();
        var o = new CodedOutputStream(inner);
        body(o);
        o.Flush();
        using var outer = new MemoryStream();
        var w = new CodedOutputStream(outer);
        w.WriteTag(1, WireFormat.WireType.Varint);
        w.WriteUInt64(7);
        w.WriteTag(11, WireFormat.WireType.LengthDelimited); // container_create
        w.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        w.Flush();
        return outer.ToArray();
    }

    private static string? Check(byte[] frame)
    {
        Request.Parser.ParseFrom(frame); // the parser takes every one of these frames
        return StrictWire.Check(frame, frame.Length, Request.Descriptor);
    }

    [Test]
    public void ValidRequest_Passes()
    {
        var r = new Request { Id = 1, ContainerCreate = new ContainerCreate { Name = "Z\uFFFD\U0001F600", GroupId = 5, WritePolicy = Protocol.WritePolicy.CreatorOnly, DurablePath = "/d" } };
        byte[] frame = r.ToByteArray();
        Assert.That(StrictWire.Check(frame, frame.Length, Request.Descriptor), Is.Null);
    }

    [TestCase(new byte[] { 0x5A, 0xFF })]
    [TestCase(new byte[] { 0x5A, 0xC0, 0x80 })]
    [TestCase(new byte[] { 0x5A, 0xED, 0xA0, 0x80 })]
    [TestCase(new byte[] { 0x5A, 0xE2, 0x82 })]
    public void NestedStringNotUtf8_IsNamed(byte[] name)
    {
        string? problem = Check(Frame(o =>
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(name));
        }));
        Assert.That(problem, Is.EqualTo("container_create.name is not valid UTF-8"));
    }

    [TestCase(2)]
    [TestCase(-1)]
    public void UnknownEnumNumber_IsNamed(int policy)
    {
        string? problem = Check(Frame(o =>
        {
            o.WriteTag(3, WireFormat.WireType.Varint);
            o.WriteEnum(policy);
        }));
        Assert.That(problem, Does.StartWith("container_create.write_policy = " + policy));
    }

    [Test]
    public void UnknownFieldsAndWireTypeMismatch_AreSkippedAsTheParserSkipsThem()
    {
        // A field the schema does not know, and 'name' sent as a varint: neither reaches a string the broker uses.
        string? problem = Check(Frame(o =>
        {
            o.WriteTag(99, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(0xFF));
            o.WriteTag(1, WireFormat.WireType.Varint);
            o.WriteUInt64(5);
        }));
        Assert.That(problem, Is.Null);
    }
}
