namespace SharedStore.Native.Tests;

/// <summary>kill -9 of C and Python processes holding leases (the broker recovers them as it does .NET clients), and
/// the death of the broker under a C process (calls return BrokerUnavailable; the process lives on and reconnects).</summary>
[TestFixture]
public sealed class CrashTests
{
    private static readonly TimeSpan s_recovery = TimeSpan.FromSeconds(10);
    private static readonly byte[] s_data = new byte[4096];

    [Test]
    public void CProcessHoldingALease_KilledWith9_AWriterThenGetsTheBlock()
    {
        // Contract: while a C process holds a lease, a writer in another process times out on that block; after
        // kill -9 of the C process the broker releases its hold and the writer gets the block.
        using var broker = BrokerProcess.Start();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        using var con = client.CreateContainer("kill9-c", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("A", 1 << 20);
        using var peer = new Peer(broker.SocketPath);
        Assert.That(peer.Do("join kill9-c"), Is.GreaterThanOrEqualTo(0));
        Assert.That(peer.Do("obj A"), Is.GreaterThanOrEqualTo(0));
        Assert.That(peer.Do("get 0 4096"), Is.GreaterThanOrEqualTo(0));
        AssertWriterRecovers(obj, peer.Process);
    }

    [Test]
    public void PythonProcessHoldingALease_KilledWith9_AWriterThenGetsTheBlock()
    {
        // Contract: the same for a Python process holding a lease through the sharedstore package.
        using var broker = BrokerProcess.Start();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        using var con = client.CreateContainer("kill9-py", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("A", 1 << 20);
        var env = SeedCallTests.Env(broker);
        env["PYTHONPATH"] = Path.Combine(NativeLibrary.RepoRoot, "bindings", "python");
        env["SHAREDSTORE_LIBRARY"] = Path.Combine(NativeLibrary.LibraryDirectory, "libsharedstore.so");
        using var holder = new Child(
        [
            PythonTests.Python, "-c",
            "import sys, sharedstore\n" +
            "o = sharedstore.Client().join_container('kill9-py').join_object('A')\n" +
            "lease = o.get(0, 4096)\n" +
            "print('held', flush=True)\n" +
            "sys.stdin.readline()\n",
        ], env);
        Assert.That(holder.NextLine(TimeSpan.FromSeconds(30)), Is.EqualTo("held"), holder.Log);
        AssertWriterRecovers(obj, holder.Process);
    }

    [Test]
    public void BrokerDies_CProcessCalls_BrokerUnavailableThenReconnects()
    {
        // Contract: after the broker died, a C process's acquiring calls return BROKER_UNAVAILABLE (-8) without
        // aborting it, its releases still succeed, and once a broker runs again the next join connects to it.
        var broker = BrokerProcess.Start();
        try
        {
            using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
            var con = client.CreateContainer("dies", SharedStoreClient.ProcessGroupId);
            con.CreateObject("A", 1 << 20);
            using var peer = new Peer(broker.SocketPath);
            Assert.That(peer.Do("join dies"), Is.GreaterThanOrEqualTo(0));
            Assert.That(peer.Do("obj A"), Is.GreaterThanOrEqualTo(0));
            Assert.That(peer.Do("get 0 10"), Is.GreaterThanOrEqualTo(0));
            broker.Kill();
            Assert.That(WaitFor(() => peer.Do("write 0 10"), -8), Is.EqualTo(-8), "object_write after the broker died");
            Assert.That(peer.Do("get 0 10"), Is.EqualTo(-8), "object_get");
            Assert.That(peer.Do("awrite 0 10"), Is.EqualTo(-8), "object_awrite");
            Assert.That(peer.Do("newobj B 4096"), Is.EqualTo(-8), "object_create");
            Assert.That(peer.Do("join elsewhere"), Is.EqualTo(-8), "container_join with no broker running");
            Assert.That(peer.Do("put"), Is.Zero, "object_put still releases");
            Assert.That(peer.Do("leaveobj"), Is.Zero, "object_leave still succeeds");
            Assert.That(peer.Do("leave"), Is.Zero, "container_leave still succeeds");

            using var second = BrokerProcess.StartOn(broker.Directory, waitReady: true);
            Assert.That(peer.Do("join dies"), Is.EqualTo(-1), "a new connection: the restarted broker has no such container");
            Assert.That(peer.Do("create again 0"), Is.GreaterThanOrEqualTo(0), "and serves the C process");
            Assert.That(peer.Process.HasExited, Is.False, "the C process is alive");
        }
        finally
        {
            broker.Dispose();
        }
    }

    private static int WaitFor(Func<int> call, int want)
    {
        // The C process learns of the death when its receive thread reads EOF: poll for it, bounded.
        var deadline = DateTime.UtcNow + s_recovery;
        int rc;
        while ((rc = call()) != want && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
        }

        return rc;
    }

    private static void AssertWriterRecovers(SharedObject obj, System.Diagnostics.Process holder)
    {
        var e = Assert.Throws<SharedStoreException>(() => obj.Write(0, s_data, TimeSpan.FromMilliseconds(100)));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.Timeout), "the lease blocks the writer while its holder lives");
        ChildProcess.KillAndWait(holder); // SIGKILL
        Assert.That(holder.HasExited, Is.True);
        obj.Write(0, s_data, s_recovery); // throws Timeout if the dead process's hold was not released
    }
}
