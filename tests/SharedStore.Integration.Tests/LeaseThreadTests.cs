namespace SharedStore.Integration.Tests;

/// <summary>Leases put by another thread than the one that got them (the lease record's owner-thread check,
/// <c>LeaseCache.IsCallingThread</c>, and the recycling of records put elsewhere), in one client process against a
/// real broker process.</summary>
public sealed class LeaseThreadTests : CrossProcessTest
{
    [Test]
    public void Put_FromAnotherThread_ReleasesTheHoldOnceAndTheRecordComesBack()
    {
        // Contract: a lease may be put by any thread, once: the put releases the read hold (a write of the block by
        // this process is no longer WouldDeadlock), a second put of it (on either thread) throws
        // InvalidOperationException, and records put by other threads are reused by the thread that got them, so
        // getting on one thread and putting on another in a loop does not keep making records.
        using var broker = StartBroker();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        using var con = client.CreateContainer("lease-threads", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("o", 4096);
        var timeout = TimeSpan.FromSeconds(10);

        var lease = obj.Get(0, 8, timeout);
        RunOnNewThread(lease.Dispose);
        obj.Write(0, new byte[8], timeout); // no hold left: not WouldDeadlock
        Assert.Throws<InvalidOperationException>(() => lease.Dispose());
        Assert.Throws<InvalidOperationException>(() => RunOnNewThread(lease.Dispose));

        using var handoff = new System.Collections.Concurrent.BlockingCollection<ObjectLease>(1);
        var putter = new Thread(() =>
        {
            foreach (var l in handoff.GetConsumingEnumerable())
            {
                l.Dispose();
            }
        });
        putter.Start();
        int records = 0;
        RunOnNewThread(() => // a fresh thread: its lease cache holds only this loop's records
        {
            for (int i = 0; i < 10_000; i++)
            {
                handoff.Add(obj.Get(0, 8, timeout));
            }

            handoff.CompleteAdding();
            Assert.That(putter.Join(TimeSpan.FromSeconds(60)), Is.True, "the putting thread did not finish");
            records = LeaseCache.Current.RecordCount;
        });
        obj.Write(0, new byte[8], timeout); // every hold was released
        Assert.That(records, Is.LessThanOrEqualTo(16), "records put by the other thread were not reused");
    }

    [Test]
    public void Put_AfterTheGettingThreadExited_FromANewThread_ReleasesOnce()
    {
        // Contract: a lease outlives the thread that got it. A new thread (whose stack may reuse the dead thread's) puts
        // it once; a second put throws InvalidOperationException and releases nothing more (the other lease of the same
        // block, held by this thread, keeps the block read-held: a write is still WouldDeadlock).
        using var broker = StartBroker();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        using var con = client.CreateContainer("lease-dead-thread", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("o", 4096);
        var timeout = TimeSpan.FromSeconds(10);

        for (int round = 0; round < 20; round++)
        {
            ObjectLease orphan = default;
            RunOnNewThread(() => orphan = obj.Get(0, 8, timeout));
            using var mine = obj.Get(0, 8, timeout);
            RunOnNewThread(orphan.Dispose);
            Assert.Throws<InvalidOperationException>(() => RunOnNewThread(orphan.Dispose));
            var e = Assert.Throws<SharedStoreException>(() => obj.Write(0, new byte[8], timeout));
            Assert.That(e!.Code, Is.EqualTo(ErrorCode.WouldDeadlock));
        }

        obj.Write(0, new byte[8], timeout);
    }

    private static void RunOnNewThread(Action action)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        t.Start();
        Assert.That(t.Join(TimeSpan.FromSeconds(30)), Is.True, "the thread did not finish");
        if (error is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        }
    }
}
