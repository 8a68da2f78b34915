namespace SharedStore.Native.Tests;

/// <summary>The C test program (c/seedcalls.c): every call of include/sharedstore.h and every error case the seed
/// lists, against a real broker (a --system one, so its permission cases can run a peer as the user nobody).</summary>
[TestFixture]
public sealed class SeedCallTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromMinutes(5);

    [Test]
    public void SeedCalls_EveryCallAndErrorCase_AllChecksPass()
    {
        // Contract: each seed call returns an id or 0 on success and exactly the documented -(ErrorCode) for each of
        // the seed's error cases (exists, missing, permission, resources, in use, destroy in progress, timeouts).
        using var broker = BrokerProcess.Start("--system");
        var r = NativeLibrary.Run([NativeLibrary.Program("seedcalls"), "plain"], Env(broker), s_limit);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stdout, Does.Contain(", 0 failed").And.Not.Contain("not ok"), r.ToString());
    }

    [Test]
    public void SeedCalls_UnderValgrindMemcheck_NoErrors()
    {
        // Contract: the same checks under valgrind's memcheck report no error: no invalid read or write, no use of
        // uninitialised memory, no definite leak, in the library (NativeAOT runtime included) or in the C program.
        // No suppressions are needed. --errors-for-leak-kinds=definite: the runtime's threads are alive at exit, so
        // their glibc thread control blocks read "possibly lost"; that is not a leak. The run goes through
        // no_io_uring (see c/no_io_uring.c): valgrind 3.19 hangs the process in the client library's io_uring
        // completion thread, so the library runs on its thread-pool fallback here (the plain run covers io_uring).
        if (!File.Exists("/usr/bin/valgrind"))
        {
            Assert.Ignore("valgrind is not installed (tools/setup.sh installs it)");
        }

        using var broker = BrokerProcess.Start("--system");
        var r = NativeLibrary.Run(
            [NativeLibrary.Program("no_io_uring"), "valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
             "--track-origins=no", NativeLibrary.Program("seedcalls-vg"), "valgrind"],
            Env(broker), TimeSpan.FromMinutes(10));
        Assert.That(r.ExitCode, Is.Not.EqualTo(99), $"valgrind reported errors:\n{r}");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stderr, Does.Contain("ERROR SUMMARY: 0 errors"), r.ToString());
        Assert.That(r.Stdout, Does.Contain(", 0 failed"), r.ToString());
    }

    [Test]
    public void SeedOnlyProgram_OwnPrototypesAndTheSeedsStruct_LinksAndWorks()
    {
        // Contract: a C program that declares the seed's prototypes itself (with the seed's int-sized object_attr)
        // links against libsharedstore.so and every call works: ids >= 0, errors < 0, data round-trips.
        using var broker = BrokerProcess.Start();
        var r = NativeLibrary.Run([NativeLibrary.Program("seed_only"), "seed-only"], Env(broker), s_limit);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stdout, Does.Contain("every call worked"), r.ToString());
    }

    [Test]
    public void Threads_GetPutConcurrentlyOnOneObject_NoTornReadsAndOnePutPerLease()
    {
        // Contract: four C threads get/put one object while a fifth submits whole-block awrites: no get sees half a
        // write, every lease is put exactly once even when two threads put it at the same instant, and afterwards
        // nothing is held (a write of the whole object goes through at once).
        using var broker = BrokerProcess.Start();
        var r = NativeLibrary.Run([NativeLibrary.Program("threads"), "threads"], Env(broker), s_limit);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stdout, Does.Contain("0 errors"), r.ToString());
    }

    internal static Dictionary<string, string> Env(BrokerProcess broker) => new() { ["SHAREDSTORE_SOCKET"] = broker.SocketPath };
}
