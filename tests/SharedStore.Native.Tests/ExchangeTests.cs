namespace SharedStore.Native.Tests;

/// <summary>The seed's writer and reader in C (samples/c) with the C# sample (samples/ReaderWriter), both ways, on
/// the same payload format and checksum; and the C sample from nothing (no broker running).</summary>
[TestFixture]
public sealed class ExchangeTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromMinutes(2);

    [Test]
    public void CWriter_CSharpReader_ReaderVerifiesTheChecksum()
    {
        // Contract: a payload written by the C writer through libsharedstore.so is read in place and verified by the C#
        // reader; the C writer's object_destroy and container_destroy then complete.
        using var broker = BrokerProcess.Start();
        var env = SeedCallTests.Env(broker);
        using var reader = new Child([ChildProcess.DotnetHost, ChildProcess.Dll("ReaderWriter.dll"), "reader", "c2cs"], env);
        using var writer = new Child([NativeLibrary.Sample("writer"), "c2cs", "64"], env);
        AssertBothSucceed(writer, reader);
    }

    [Test]
    public void CSharpWriter_CReader_ReaderVerifiesTheChecksum()
    {
        // Contract: the C reader verifies, in place, the payload the C# writer wrote.
        using var broker = BrokerProcess.Start();
        var env = SeedCallTests.Env(broker);
        using var reader = new Child([NativeLibrary.Sample("reader"), "cs2c"], env);
        using var writer = new Child([ChildProcess.DotnetHost, ChildProcess.Dll("ReaderWriter.dll"), "writer", "cs2c", "64"], env);
        AssertBothSucceed(writer, reader);
    }

    [Test]
    public void CSamples_NoBrokerRunning_TheLibraryStartsTheBrokerBesideIt()
    {
        // Contract: from nothing (no broker, an empty socket directory), SHAREDSTORE_START_BROKER=1 makes the library
        // start the broker published beside it (artifacts/native/broker), and the C reader and writer exchange data.
        string dir = BrokerProcess.NewDirectory();
        string socket = Path.Combine(dir, "broker.sock");
        var env = new Dictionary<string, string> { ["SHAREDSTORE_SOCKET"] = socket, ["SHAREDSTORE_START_BROKER"] = "1" };
        try
        {
            using var reader = new Child([NativeLibrary.Sample("reader"), "fresh"], env);
            using var writer = new Child([NativeLibrary.Sample("writer"), "fresh", "16"], env);
            AssertBothSucceed(writer, reader);
            string pid = File.ReadAllText(socket + ".pid").Trim();
            string cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            Assert.That(cmdline, Does.Contain(Path.Combine(NativeLibrary.LibraryDirectory, "broker", "SharedStore.Broker.dll")));
        }
        finally
        {
            StopBrokerOf(socket);
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Stops a broker that a client started (detached: not our child) through its pid file, and waits.</summary>
    internal static void StopBrokerOf(string socket)
    {
        if (!File.Exists(socket + ".pid") || !int.TryParse(File.ReadAllText(socket + ".pid").Trim(), out int pid))
        {
            return;
        }

        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            p.Kill();
            p.WaitForExit(10_000);
        }
        catch (ArgumentException)
        {
            // already gone
        }
    }

    private static void AssertBothSucceed(Child writer, Child reader)
    {
        int w = writer.Exit(s_limit);
        int r = reader.Exit(s_limit);
        string logs = $"writer:\n{writer.Log}\nreader:\n{reader.Log}";
        Assert.That(r, Is.Zero, logs);
        Assert.That(w, Is.Zero, logs);
        Assert.That(reader.Log, Does.Contain("verified").And.Not.Contain("MISMATCH"), logs);
        Assert.That(writer.Log, Does.Contain("container_destroy done"), logs);
    }
}
