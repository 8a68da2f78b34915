using System.Text.Unicode;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace SharedStore.Protocol;

/// <summary>
/// The two checks protobuf's C# runtime does not make when it parses a message, made on the message's raw bytes:
/// <list type="bullet">
/// <item>Every <c>string</c> field holds valid UTF-8. proto3 requires it, but the parser decodes invalid bytes to U+FFFD,
/// so <c>'Z' 0xFF</c>, <c>'Z' 0xFE</c> and <c>'Z' U+FFFD</c> all parsed to one name, and the broker gave all three the
/// same container (issue 13, finding 7). Valid UTF-8 and the .NET strings it decodes to correspond one to one, so once
/// every string was valid, two different byte strings can no longer be one name.</item>
/// <item>Every <c>enum</c> field holds a number the schema names. proto3 enums are open: the parser keeps any number,
/// and the broker took an unknown write policy as a policy.</item>
/// </list>
/// The walk follows the schema (the message descriptors), not a list of fields, so a field added later is checked
/// without anyone remembering to. Fields the schema does not know are skipped, as the parser skips them; a known field
/// that arrives with another wire type is skipped too, because the parser does not put it into the field either.
/// Control messages are small and rare, so the second pass over the bytes costs nothing that matters.
/// </summary>
internal static class StrictWire
{
    /// <summary>Deeper than any message of the schema nests; a frame cannot make the walk recurse without bound.</summary>
    private const int MaxDepth = 16;

    /// <summary>Null when every string and enum field of the message in <paramref name="buffer"/>[0, length), at any
    /// depth, is valid; else what is wrong, naming the field by its path (<c>container_create.name</c>). The bytes must
    /// already have parsed as <paramref name="descriptor"/>'s message.</summary>
    public static string? Check(byte[] buffer, int length, MessageDescriptor descriptor)
    {
        try
        {
            return Check(new CodedInputStream(buffer, 0, length), descriptor, "", 0);
        }
        catch (InvalidProtocolBufferException e)
        {
            return $"malformed message: {e.Message}";
        }
    }

    private static string? Check(CodedInputStream input, MessageDescriptor descriptor, string path, int depth)
    {
        if (depth > MaxDepth)
        {
            return $"{path} nests deeper than {MaxDepth} messages";
        }

        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            var field = descriptor.FindFieldByNumber(WireFormat.GetTagFieldNumber(tag));
            var wire = WireFormat.GetTagWireType(tag);
            if (field is null)
            {
                input.SkipLastField();
                continue;
            }

            string name = path.Length == 0 ? field.Name : $"{path}.{field.Name}";
            string? problem = (field.FieldType, wire) switch
            {
                (FieldType.String, WireFormat.WireType.LengthDelimited) =>
                    Utf8.IsValid(input.ReadBytes().Span) ? null : $"{name} is not valid UTF-8",
                (FieldType.Enum, WireFormat.WireType.Varint) => CheckEnum(field, input.ReadEnum(), name),
                (FieldType.Enum, WireFormat.WireType.LengthDelimited) => CheckPackedEnums(field, input.ReadBytes(), name),
                (FieldType.Message, WireFormat.WireType.LengthDelimited) =>
                    Check(input.ReadBytes().CreateCodedInput(), field.MessageType, name, depth + 1),
                _ => Skip(input),
            };
            if (problem is not null)
            {
                return problem;
            }
        }

        return null;
    }

    private static string? CheckEnum(FieldDescriptor field, int value, string name) =>
        field.EnumType.FindValueByNumber(value) is null ? $"{name} = {value} is not a {field.EnumType.Name} value" : null;

    private static string? CheckPackedEnums(FieldDescriptor field, ByteString packed, string name)
    {
        var input = packed.CreateCodedInput();
        while (!input.IsAtEnd)
        {
            if (CheckEnum(field, input.ReadEnum(), name) is { } problem)
            {
                return problem;
            }
        }

        return null;
    }

    private static string? Skip(CodedInputStream input)
    {
        input.SkipLastField();
        return null;
    }
}
