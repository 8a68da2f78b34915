using System.Diagnostics;
using System.Globalization;
using SharedStore.Cli.Tests.Harness;
using SharedStore.TestClient;

namespace SharedStore.Integration.Tests;

/// <summary>The big cases: an object above 2 GiB, and 100 000 small objects in one container.</summary>
public sealed class ScaleTests : CrossProcessTest
{
    [Test]
    public void Object_LargerThan2GiB_LastMiBWrittenByOneProcessIsReadByAnother()
    {
        // Contract: objects may exceed 2 GiB (64-bit offsets and lengths): a write at the last MiB by one process is
        // read back by another with a ranged get, and a get of the whole object works (through Pointer/Length).
        const long size = (2L << 30) + (1L << 20);
        const long lastMiB = size - (1L << 20);
        using var broker = StartBroker();
        var writer = Connect(broker, "writer");
        var reader = Connect(broker, "reader");
        writer.Ok($"create-container big {SharedStoreClient.ProcessGroupId}");
        writer.Ok($"create-object o {size}", TimeSpan.FromSeconds(60));
        string written = writer.Ok($"write-pattern o {lastMiB} {1L << 20} 11 30000")[0];

        byte[] expected = new byte[1L << 20];
        Payload.Fill(expected, 0, 11);
        Assert.That(written, Is.EqualTo(Payload.Format(Payload.Checksum(expected))));

        reader.Ok("join-container big");
        Assert.That(ClientProcess.Field(reader.Ok("join-object o"), "size"), Is.EqualTo(size.ToString(CultureInfo.InvariantCulture)));
        Assert.That(reader.Ok($"read o {lastMiB} {1L << 20}")[0], Is.EqualTo(written));
        Assert.That(reader.Ok($"read o {lastMiB - 16} 16")[0], Is.EqualTo(Payload.Format(Payload.Checksum(new byte[16]))), "bytes before the write stay zero");

        var whole = reader.Ok($"get o 0 {size} 30000");
        Assert.That(ClientProcess.Field(whole, "first"), Is.EqualTo("0"));
        reader.Ok($"put {whole[0]}");
    }

    [Test]
    public void Container_100000SmallObjects_CreatedByOneProcessJoinedByAnotherAndListedBySharedstoreLs()
    {
        // Contract: a container holds 100 000 objects of 1 KiB; another process joins a sample of them by name and
        // reads what the creator stamped into each; `sharedstore ls` answers and lists every one of them (issue 13,
        // finding 4: the list reply was larger than one datagram, the broker dropped it and ls waited out its timeout).
        const int count = 100_000;
        using var broker = StartBroker();
        var creator = Connect(broker, "creator");
        var joiner = Connect(broker, "joiner");
        creator.Ok($"create-container many {SharedStoreClient.ProcessGroupId}");

        var sw = Stopwatch.StartNew();
        string createMs = creator.Ok($"create-many obj {count} 1024", TimeSpan.FromSeconds(120))[0];
        TestContext.Progress.WriteLine($"created {count} objects of 1 KiB in {createMs} ms (round trip {sw.ElapsedMilliseconds} ms)");

        joiner.Ok("join-container many");
        var sample = Enumerable.Range(0, 500).Select(i => i * 199).Append(count - 1).Distinct();
        string joinMs = joiner.Ok($"join-many obj {string.Join(' ', sample)}", TimeSpan.FromSeconds(60))[0];
        TestContext.Progress.WriteLine($"joined, read and left a sample of 501 objects in {joinMs} ms");
        creator.Err("create-object obj0 1024", "AlreadyExists");
        joiner.Err($"join-object obj{count}", "NotFound");

        // The list itself, in this process: the broker's snapshot, its parts, their assembly.
        using (var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath }))
        {
            sw.Restart();
            var list = client.ListRaw();
            TestContext.Progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"list of {count} objects through the library: {sw.ElapsedMilliseconds} ms, {list.CalculateSize()} bytes"));
            Assert.That(list.Containers.Single().Objects, Has.Count.EqualTo(count));
        }

        sw.Restart();
        var ls = CliRunner.Run(broker.SocketPath, "ls");
        long lsMs = sw.ElapsedMilliseconds;
        Assert.That(ls.ExitCode, Is.EqualTo(0), $"exit {ls.ExitCode}; stderr:\n{ls.Stderr}");
        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (string line in ls.Stdout.Split('\n'))
        {
            string[] cells = line.Split('│', StringSplitOptions.TrimEntries);
            if (cells.Length > 3 && cells[1] == "many" && cells[2].StartsWith("obj", StringComparison.Ordinal))
            {
                listed.Add(cells[2]);
            }
        }

        Assert.That(listed, Has.Count.EqualTo(count), "ls must list every object once");
        Assert.That(listed, Does.Contain("obj0").And.Contain($"obj{count - 1}"));
        TestContext.Progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"sharedstore ls of {count} objects: {lsMs} ms as a process (start, connect, list, print {ls.Stdout.Length} characters)"));
    }
}
