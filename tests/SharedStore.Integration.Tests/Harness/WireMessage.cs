using Google.Protobuf;

namespace SharedStore.Integration.Tests.Harness;

/// <summary>
/// A protobuf message written field by field, for frames the generated types cannot produce: a string field holding
/// bytes that are not UTF-8 (string and bytes share one wire encoding), an enum field holding a number the schema does
/// not name. Field numbers are those of sharedstore.proto.
/// </summary>
internal sealed class WireMessage
{
    private readonly MemoryStream _bytes = new();
    private readonly CodedOutputStream _out;

    public WireMessage() => _out = new CodedOutputStream(_bytes, leaveOpen: true);

    public WireMessage Varint(int field, long value)
    {
        _out.WriteTag(field, WireFormat.WireType.Varint);
        _out.WriteInt64(value);
        return this;
    }

    public WireMessage Bytes(int field, byte[] value)
    {
        _out.WriteTag(field, WireFormat.WireType.LengthDelimited);
        _out.WriteBytes(ByteString.CopyFrom(value));
        return this;
    }

    public WireMessage Message(int field, WireMessage value) => Bytes(field, value.ToArray());

    public byte[] ToArray()
    {
        _out.Flush();
        return _bytes.ToArray();
    }

    /// <summary>A Request frame: id (field 1) and one body (its oneof field number).</summary>
    public static byte[] Request(ulong id, int bodyField, WireMessage body) =>
        new WireMessage().Varint(1, (long)id).Message(bodyField, body).ToArray();
}
