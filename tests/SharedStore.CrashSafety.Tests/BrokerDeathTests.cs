using System.Diagnostics;

namespace SharedStore.CrashSafety.Tests;

/// <summary>Broker death: clients never hang, mapped memory stays readable, a restarted broker starts clean.</summary>
[TestFixture]
[Category("CrossProcess")]
public class BrokerDeathTests
{
    [Test]
    public void BrokerKilled_LockWaitersFailFast_CallsFail_MappedMemoryStaysReadable()
    {
        using var broker = BrokerProcess.Start();
        using var holderClient = broker.Connect();
        using var writerClient = broker.Connect();
        var con = holderClient.CreateContainer("death", SharedStoreClient.ProcessGroupId);
        var obj = con.CreateObject("o", 1 << 20);
        obj.Write(0, "hello"u8);
        var con2 = writerClient.JoinContainer("death");
        var obj2 = con2.JoinObject("o");
        var lease = obj.Get(0, 5);

        // A writer in another member slot waits for the lease.
        var blocked = Task.Run(() => obj2.Write(0, "HELLO"u8, TimeSpan.FromSeconds(60)));
        Thread.Sleep(200);
        Assert.That(blocked.IsCompleted, Is.False, "the write waits for the lease");

        var sw = Stopwatch.StartNew();
        broker.Kill();
        var ex = Assert.Throws<AggregateException>(() => blocked.Wait(TimeSpan.FromSeconds(5)));
        Assert.That(ex!.InnerException, Is.TypeOf<SharedStoreException>().With.Property(nameof(SharedStoreException.Code)).EqualTo(ErrorCode.BrokerUnavailable));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1)), "the lock waiter gave up within 1 s");

        // Calls that need the broker fail at once.
        sw.Restart();
        var e2 = Assert.Throws<SharedStoreException>(() => con.JoinObject("o"));
        Assert.That(e2!.Code, Is.EqualTo(ErrorCode.BrokerUnavailable));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1)));

        // Memory already mapped stays readable.
        Assert.That(lease.ReadOnlySpan.ToArray(), Is.EqualTo("hello"u8.ToArray()));
        lease.Dispose();
    }

    [Test]
    public void BrokerRestarted_StartsClean_AndClientsReconnect()
    {
        using var broker = BrokerProcess.Start();
        using (var client = broker.Connect())
        {
            client.CreateContainer("gone", SharedStoreClient.ProcessGroupId).CreateObject("o", 4096);
        }

        broker.Kill(); // leaves its socket file, lock file and pid file behind
        Assert.That(File.Exists(broker.SocketPath), Is.True, "the dead broker's socket file is left over");
        using var again = BrokerProcess.StartOn(broker.Directory, waitReady: true);
        using var fresh = again.Connect();
        var e = Assert.Throws<SharedStoreException>(() => fresh.JoinContainer("gone"));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.NotFound), "memory-only containers do not survive the broker");
        using var con = fresh.CreateContainer("gone", SharedStoreClient.ProcessGroupId);
        Assert.That(con.Name, Is.EqualTo("gone"));
    }

    [Test]
    public void SecondBroker_OnALiveBrokersSocket_Refuses()
    {
        using var broker = BrokerProcess.Start();
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "SharedStore.Broker.dll"));
        psi.ArgumentList.Add("--socket");
        psi.ArgumentList.Add(broker.SocketPath);
        using var second = Process.Start(psi)!;
        Assert.That(second.WaitForExit(30_000), Is.True);
        Assert.That(second.ExitCode, Is.EqualTo(3));
        Assert.That(second.StandardError.ReadToEnd(), Does.Contain("another broker"));
        using var client = broker.Connect(); // the first one still serves
        Assert.That(client.BrokerPid, Is.EqualTo(broker.Pid));
    }
}
