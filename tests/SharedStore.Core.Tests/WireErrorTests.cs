using System.Text.RegularExpressions;
using SharedStore.Protocol;

namespace SharedStore.Core.Tests;

/// <summary>
/// Every error code, pinned on every side that names it: the public <see cref="SharedStore.ErrorCode"/>, the wire's
/// <see cref="Protocol.ErrorCode"/>, the C header's <c>enum sharedstore_error</c> (-(int)ErrorCode) and the Python
/// binding's error table. Before issue 14 the wire's BUSY was 11, the public WouldDeadlock's number, and a cast took it
/// across; this suite failed on that code (the wire-side and mapping tests).
/// </summary>
[TestFixture]
public sealed partial class WireErrorTests
{
    /// <summary>The one list: name and number of every code. A new code is added here, and nowhere is a number reused.</summary>
    private static readonly (string Name, int Value, string CName)[] s_codes =
    [
        ("Ok", 0, "SHAREDSTORE_OK"),
        ("NotFound", 1, "SHAREDSTORE_E_NOT_FOUND"),
        ("AlreadyExists", 2, "SHAREDSTORE_E_ALREADY_EXISTS"),
        ("PermissionDenied", 3, "SHAREDSTORE_E_PERMISSION"),
        ("NoResources", 4, "SHAREDSTORE_E_NO_RESOURCES"),
        ("Timeout", 5, "SHAREDSTORE_E_TIMEOUT"),
        ("Destroyed", 6, "SHAREDSTORE_E_DESTROYED"),
        ("InvalidArgument", 7, "SHAREDSTORE_E_INVALID_ARGUMENT"),
        ("BrokerUnavailable", 8, "SHAREDSTORE_E_BROKER_UNAVAILABLE"),
        ("VersionMismatch", 9, "SHAREDSTORE_E_VERSION_MISMATCH"),
        ("Canceled", 10, "SHAREDSTORE_E_CANCELED"),
        ("WouldDeadlock", 11, "SHAREDSTORE_E_WOULD_DEADLOCK"),
        ("Internal", 12, "SHAREDSTORE_E_INTERNAL"),
        ("Busy", 13, "SHAREDSTORE_E_BUSY"),
        ("IoError", 14, "SHAREDSTORE_E_IO"),
    ];

    [Test]
    public void PublicErrorCode_EveryValuePinned()
    {
        var actual = Enum.GetValues<SharedStore.ErrorCode>().Select(c => (c.ToString(), (int)c)).ToArray();
        Assert.That(actual, Is.EquivalentTo(s_codes.Select(c => (c.Name, c.Value))));
    }

    [Test]
    public void WireErrorCode_SameNamesAndNumbersAsThePublicOne()
    {
        var actual = Enum.GetValues<Protocol.ErrorCode>().Select(c => (c.ToString(), (int)c)).ToArray();
        Assert.That(actual, Is.EquivalentTo(s_codes.Select(c => (c.Name, c.Value))));
    }

    [Test]
    public void WireErrors_MapsEveryCodeBothWays_Exactly()
    {
        foreach (var (name, value, _) in s_codes)
        {
            var pub = Enum.Parse<SharedStore.ErrorCode>(name);
            var wire = Enum.Parse<Protocol.ErrorCode>(name);
            Assert.That(WireErrors.ToWire(pub), Is.EqualTo(wire), name);
            Assert.That(WireErrors.FromWire(wire), Is.EqualTo(pub), name);
            Assert.That((int)WireErrors.ToWire(pub), Is.EqualTo(value), name);
        }
    }

    [Test]
    public void WireErrors_UnknownNumber_BecomesInternal()
    {
        Assert.That(WireErrors.FromWire((Protocol.ErrorCode)999), Is.EqualTo(SharedStore.ErrorCode.Internal));
        Assert.That(WireErrors.ToWire((SharedStore.ErrorCode)999), Is.EqualTo(Protocol.ErrorCode.Internal));
    }

    [Test]
    public void CHeader_EveryCodeIsMinusItsNumber()
    {
        string header = File.ReadAllText(Path.Combine(RepoRoot(), "include", "sharedstore.h"));
        int start = header.IndexOf("enum sharedstore_error {", StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThanOrEqualTo(0), "enum sharedstore_error not found");
        string body = header[start..header.IndexOf("};", start, StringComparison.Ordinal)];
        var actual = CEnumEntry().Matches(body).Select(m => (m.Groups[1].Value, int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        Assert.That(actual, Is.EquivalentTo(s_codes.Select(c => (c.CName, -c.Value))));
    }

    [Test]
    public void PythonBinding_EveryCodeHasItsClass()
    {
        string errors = File.ReadAllText(Path.Combine(RepoRoot(), "bindings", "python", "sharedstore", "errors.py"));
        var actual = PythonClass().Matches(errors).Select(m => (m.Groups[1].Value, int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        Assert.That(actual, Is.EquivalentTo(s_codes.Where(c => c.Value != 0).Select(c => (c.Name, c.Value))));
        string byCode = errors[errors.IndexOf("BY_CODE = ", StringComparison.Ordinal)..];
        foreach (var (name, _, _) in s_codes.Where(c => c.Value != 0))
        {
            Assert.That(Regex.IsMatch(byCode, $@"\b{name}\b"), Is.True, $"{name} is missing from BY_CODE");
        }
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SharedStore.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("SharedStore.sln not found above the test directory");
    }

    [GeneratedRegex(@"(SHAREDSTORE_[A-Z_]+)\s*=\s*(-?\d+)")]
    private static partial Regex CEnumEntry();

    [GeneratedRegex(@"class (\w+)\(SharedStoreError[^)]*\):\s*\n\s*code = (\d+)")]
    private static partial Regex PythonClass();
}
