using System.Globalization;
using System.Text;

namespace SharedStore.Broker;

/// <summary>
/// The names replication uses on NATS (docs/ARCHITECTURE.md §14), written once here. Container and object names are any
/// UTF-8, NATS subject tokens and keys are not, so both appear as the lowercase hex of their UTF-8 bytes (one to one:
/// two names never share a subject or key).
/// <list type="bullet">
/// <item>block of an object: <c>&lt;stream&gt;.&lt;c&gt;.b.&lt;o&gt;.&lt;block&gt;</c> (one per block: the stream keeps the newest);</item>
/// <item>object announcement: <c>&lt;stream&gt;.&lt;c&gt;.o.&lt;o&gt;</c> (size and incarnation; before its first block), replaced by
/// the object's tombstone (header <see cref="ReplicationHeaders.Destroyed"/>) when the owner destroys it;</item>
/// <item>object watermark: <c>&lt;stream&gt;.&lt;c&gt;.w.&lt;o&gt;</c> (every block of versions up to it is in the stream before it);</item>
/// <item>container tombstone: <c>&lt;stream&gt;.&lt;c&gt;.d</c> (the owner destroyed the container; the last message of its epoch);</item>
/// <item>catalog keys: <c>c.&lt;c&gt;</c> (container), <c>o.&lt;c&gt;.&lt;o&gt;</c> (object), <c>l.&lt;c&gt;</c> (the ownership lease).</item>
/// </list>
/// </summary>
internal static class ReplicationNames
{
    public const string DefaultStream = "SHAREDSTORE";
    public const string DefaultBucket = "SHAREDSTORE";

    public static string Hex(string name) => Convert.ToHexStringLower(Encoding.UTF8.GetBytes(name));

    public static string FromHex(string hex) => Encoding.UTF8.GetString(Convert.FromHexString(hex));

    /// <summary>Every subject of the stream.</summary>
    public static string StreamSubjects(string stream) => stream + ".>";

    /// <summary>Every subject of one container (a replica's consumer filter; a destroy's purge).</summary>
    public static string ContainerSubjects(string stream, string container) => $"{stream}.{Hex(container)}.>";

    public static string BlockSubject(string stream, string container, string obj, long block) =>
        string.Create(CultureInfo.InvariantCulture, $"{stream}.{Hex(container)}.b.{Hex(obj)}.{block}");

    public static string ObjectBlocks(string stream, string container, string obj) => $"{stream}.{Hex(container)}.b.{Hex(obj)}.>";

    public static string ObjectSubject(string stream, string container, string obj) => $"{stream}.{Hex(container)}.o.{Hex(obj)}";

    public static string WatermarkSubject(string stream, string container, string obj) => $"{stream}.{Hex(container)}.w.{Hex(obj)}";

    /// <summary>The container's tombstone: the owner destroyed it (docs/ARCHITECTURE.md §14.2).</summary>
    public static string ContainerTombstoneSubject(string stream, string container) => $"{stream}.{Hex(container)}.d";

    public static string ContainerKey(string container) => "c." + Hex(container);

    public static string ObjectKey(string container, string obj) => $"o.{Hex(container)}.{Hex(obj)}";

    public static string LeaseKey(string container) => "l." + Hex(container);

    /// <summary>Parses a subject of the stream: its kind ('b', 'o', 'w', or 'd' for the container's tombstone), object
    /// name ("" for 'd') and block (-1 unless 'b'). False for anything else (a replica ignores it).</summary>
    public static bool TryParse(string subject, out char kind, out string obj, out long block)
    {
        kind = '\0';
        obj = "";
        block = -1;
        string[] t = subject.Split('.');
        if (t.Length == 3 && t[2] == "d")
        {
            kind = 'd';
            return true;
        }

        if (t.Length < 4 || t[2].Length != 1)
        {
            return false;
        }

        kind = t[2][0];
        try
        {
            obj = FromHex(t[3]);
        }
        catch (FormatException)
        {
            return false;
        }

        return kind switch
        {
            'b' => t.Length == 5 && long.TryParse(t[4], NumberStyles.None, CultureInfo.InvariantCulture, out block),
            'o' or 'w' => t.Length == 4,
            _ => false,
        };
    }

    /// <summary>A stream or bucket name: JetStream takes letters, digits, '-' and '_' (and the name is the first
    /// token of every subject, so no '.', '*' or '>').</summary>
    public static bool IsValidStreamName(string name) =>
        name.Length is > 0 and <= 64 && name.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_');
}

/// <summary>The headers of the stream's messages (docs/ARCHITECTURE.md §14, "Message format"). The payload of a block
/// message is the block's bytes (the last block of an object: only the object's bytes).</summary>
internal static class ReplicationHeaders
{
    /// <summary>The block's version on the owner (its BlockVersion when it was read under the read hold); for a
    /// watermark, the object version it promises.</summary>
    public const string Version = "SS-Version";

    /// <summary>CRC-32C of the payload, as 8 hex digits.</summary>
    public const string Crc = "SS-Crc";

    /// <summary>The owner's lease epoch (the lease key's revision when it was taken).</summary>
    public const string Epoch = "SS-Epoch";

    /// <summary>The object's incarnation (ReplicaObjectMeta.incarnation): blocks of a destroyed object of the same name
    /// are dropped.</summary>
    public const string Incarnation = "SS-Inc";

    /// <summary>The object's size in bytes (on every message: a replica can create the object from any of them).</summary>
    public const string Size = "SS-Size";

    /// <summary>"1" when the block was marked torn on the owner (its writer died mid-write).</summary>
    public const string Torn = "SS-Torn";

    /// <summary>"1" on an object subject: the tombstone of the object's incarnation SS-Inc, which the owner destroyed
    /// (every incarnation of that name up to SS-Inc is gone).</summary>
    public const string Destroyed = "SS-Destroyed";
}
