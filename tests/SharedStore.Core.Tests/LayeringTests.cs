using System.Text.RegularExpressions;

namespace SharedStore.Core.Tests;

/// <summary>
/// The dependency between the client layer and the asynchronous layer goes one way (docs/ARCHITECTURE.md §9.8):
/// src/SharedStore.Core/Client/ calls Async/, and Async/ never names a type declared in Client/. Both used to share
/// the root namespace, which hid a cycle (the channel took a SharedObject and the BrokerConnection; the client-path
/// aread lived in Async/). Read from the source, so a use inside a method body counts as much as one in a signature.
/// </summary>
[TestFixture]
public sealed partial class LayeringTests
{
    /// <summary>The files of Async/ that stay in the root namespace: public types whose namespace is part of the
    /// source-compatible API (<c>using SharedStore;</c> must keep finding them).</summary>
    private static readonly string[] s_publicApiFiles = ["AsyncOperation.cs", "SharedBuffer.cs"];

    [Test]
    public void AsyncLayer_NamesNoTypeOfTheClientLayer()
    {
        // Contract: no file under Async/ uses a type declared under Client/ (comments and string literals aside).
        string core = Path.Combine(RepoRoot(), "src", "SharedStore.Core");
        var clientTypes = Directory.GetFiles(Path.Combine(core, "Client"), "*.cs")
            .SelectMany(f => DeclaredType().Matches(CommentOrString().Replace(File.ReadAllText(f), " ")).Select(m => m.Groups["name"].Value))
            .ToHashSet();
        Assert.That(clientTypes, Does.Contain("SharedObject").And.Contain("BrokerConnection").And.Contain("SharedStoreClientOptions"),
            "the scan must find the client layer's declarations");

        var uses = new List<string>();
        foreach (string file in Directory.GetFiles(Path.Combine(core, "Async"), "*.cs"))
        {
            string code = CommentOrString().Replace(File.ReadAllText(file), " ");
            uses.AddRange(Identifier().Matches(code).Select(m => m.Value).Where(clientTypes.Contains).Distinct()
                .Select(t => $"{Path.GetFileName(file)} uses {t}"));
        }

        Assert.That(uses, Is.Empty, "Async/ must not depend on Client/: pass ids (ChannelTarget) or move the code to Client/");
    }

    [Test]
    public void AsyncLayer_InternalTypesLiveInTheAsyncNamespace()
    {
        // Contract: every file under Async/ declares namespace SharedStore.Async, except the files of public API types,
        // which keep the root namespace for source compatibility.
        string async = Path.Combine(RepoRoot(), "src", "SharedStore.Core", "Async");
        var wrong = Directory.GetFiles(async, "*.cs")
            .Where(f => !s_publicApiFiles.Contains(Path.GetFileName(f)))
            .Where(f => !File.ReadAllText(f).Contains("namespace SharedStore.Async;", StringComparison.Ordinal))
            .Select(Path.GetFileName)
            .ToList();
        Assert.That(wrong, Is.Empty);
    }

    /// <summary>The checkout these tests were built from (the folder holding SharedStore.sln).</summary>
    private static string RepoRoot()
    {
        for (string? d = AppContext.BaseDirectory; d is not null; d = Path.GetDirectoryName(d))
        {
            if (File.Exists(Path.Combine(d, "SharedStore.sln")))
            {
                return d;
            }
        }

        throw new InvalidOperationException($"no SharedStore.sln above {AppContext.BaseDirectory}");
    }

    [GeneratedRegex(@"\b(?:class|struct|interface|enum|record(?:\s+struct|\s+class)?)\s+(?<name>[A-Z]\w*)")]
    private static partial Regex DeclaredType();

    /// <summary>Comments (line, block, XML doc) and string literals (regular, verbatim, interpolated, char).</summary>
    [GeneratedRegex(@"//[^\n]*|/\*.*?\*/|@""(?:[^""]|"""")*""|\$?""(?:\\.|[^""\\\n])*""|'(?:\\.|[^'\\\n])'", RegexOptions.Singleline)]
    private static partial Regex CommentOrString();

    [GeneratedRegex(@"\b[A-Za-z_]\w*\b")]
    private static partial Regex Identifier();
}
