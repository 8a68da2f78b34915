namespace SharedStore.Integration.Tests;

/// <summary>Block locks across processes: writer priority, re-entry, self-deadlock refusal, lock timeouts.</summary>
public sealed class LockTests : CrossProcessTest
{
    private static long Gid => SharedStoreClient.ProcessGroupId;

    private BrokerProcess _broker = null!;
    private ClientProcess _a = null!;
    private ClientProcess _b = null!;
    private ClientProcess _c = null!;

    [SetUp]
    public void StartProcesses()
    {
        _broker = StartBroker();
        _a = Connect(_broker, "A");
        _b = Connect(_broker, "B");
        _c = Connect(_broker, "C");
        _a.Ok($"create-container locks {SharedStoreClient.ProcessGroupId}");
        _a.Ok($"create-object o {4L << 20}");
        foreach (var c in new[] { _b, _c })
        {
            c.Ok("join-container locks");
            c.Ok("join-object o");
        }
    }

    [Test]
    public void Get_WhileAWriterWaits_WaitsBehindTheWriter()
    {
        // Contract (writer priority): while a writer waits for block 0, a new get of block 0 by another process waits
        // behind it; when the holder puts, the write completes first and the late get then sees the written bytes.
        string lease = _a.Ok("get o 0 100 5000")[0];

        int write = _b.Send("write o 0 100 7 30000");
        _b.ExpectNoAnswerYet(write, because: "A holds block 0 by get");
        WaitUntilWriterWaits(_broker, "locks", "o", 0, _b.Pid);

        int get = _c.Send("get o 0 100 30000");
        _c.ExpectNoAnswerYet(get, because: "B's write waits for block 0 and writers have priority");
        _b.ExpectNoAnswerYet(write, TimeSpan.Zero, "A still holds block 0");

        _a.Ok($"put {lease}");
        _b.ExpectOk(write);
        var got = _c.ExpectOk(get);
        Assert.That(ClientProcess.Field(got, "first"), Is.EqualTo("7"), "C's get must complete after B's write");
    }

    [Test]
    public void Get_ReentryWhileAWriterWaits_CompletesAtOnce()
    {
        // Contract: a process that already holds block 0 by get may get it again while a writer waits for it (re-entry
        // does not queue behind the writer, which would deadlock); the write completes once every lease is put.
        string first = _a.Ok("get o 0 100 5000")[0];
        int write = _b.Send("write o 0 100 9 30000");
        _b.ExpectNoAnswerYet(write, because: "A holds block 0 by get");
        WaitUntilWriterWaits(_broker, "locks", "o", 0, _b.Pid);

        string second = _a.Ok("get o 0 100 30000", TimeSpan.FromSeconds(2))[0];
        _b.ExpectNoAnswerYet(write, TimeSpan.Zero, "A holds block 0 twice");

        _a.Ok($"put {first}");
        _b.ExpectNoAnswerYet(write, TimeSpan.FromMilliseconds(300), "A still holds its second lease");
        _a.Ok($"put {second}");
        _b.ExpectOk(write);
        Assert.That(ClientProcess.Field(_c.Ok("get o 0 100 5000"), "first"), Is.EqualTo("9"));
    }

    [Test]
    public void Write_OnBlocksThisProcessHolds_FailsWithWouldDeadlockAtOnce()
    {
        // Contract: object_write on a block the same process holds by get would wait for itself: it fails with
        // WouldDeadlock immediately (no waiting for its timeout) and writes nothing; other blocks stay writable.
        string lease = _a.Ok("get o 0 100 5000")[0];
        _a.Err("write o 50 100 3 30000", "WouldDeadlock", TimeSpan.FromSeconds(2));
        _a.Err($"write o {(1 << 20) - 10} 20 3 30000", "WouldDeadlock", TimeSpan.FromSeconds(2));
        _a.Ok($"write o {1 << 20} 100 3 5000");
        _a.Ok($"put {lease}");
        Assert.That(ClientProcess.Field(_b.Ok("get o 0 100 5000"), "first"), Is.EqualTo("0"), "the refused write must not have written");
    }

    [Test]
    public void Get_BlockedByAWaitingWriter_FailsWithTimeout()
    {
        // Contract: a get whose lock wait exceeds its timeout fails with Timeout and holds nothing: the waiting writer
        // still proceeds once the holder puts.
        string lease = _a.Ok("get o 0 100 5000")[0];
        int write = _b.Send("write o 0 100 5 30000");
        _b.ExpectNoAnswerYet(write, because: "A holds block 0 by get");
        WaitUntilWriterWaits(_broker, "locks", "o", 0, _b.Pid);

        _c.Err("get o 0 100 300", "Timeout", TimeSpan.FromSeconds(10));

        _a.Ok($"put {lease}");
        _b.ExpectOk(write);
        Assert.That(ClientProcess.Field(_c.Ok("get o 0 100 5000"), "first"), Is.EqualTo("5"));
    }

    [Test]
    public void Write_BlockedByAHolder_FailsWithTimeoutAndWritesNothing()
    {
        // Contract: a write whose lock wait exceeds its timeout fails with Timeout, writes nothing and holds nothing.
        string lease = _a.Ok("get o 0 100 5000")[0];
        _b.Err("write o 0 100 6 300", "Timeout", TimeSpan.FromSeconds(10));
        _c.Ok("get o 0 100 2000", TimeSpan.FromSeconds(5)); // no writer left waiting: gets are admitted
        _a.Ok($"put {lease}");
        Assert.That(ClientProcess.Field(_b.Ok("get o 0 100 5000"), "first"), Is.EqualTo("0"));
    }

    [Test]
    public void Write_HolderProcessKilled_ProceedsOnceTheBrokerReleasesItsLocks()
    {
        // Contract: the broker releases whatever a crashed process held: a write waiting for block 0 held by a get of
        // a process that is then SIGKILLed completes, and later gets are admitted.
        _a.Ok("get o 0 100 5000");
        _a.Ok($"get o 0 {3L << 20} 5000");
        int write = _b.Send($"write o 0 {2L << 20} 8 30000");
        _b.ExpectNoAnswerYet(write, because: "A holds blocks 0-2 by get");
        WaitUntilWriterWaits(_broker, "locks", "o", 0, _b.Pid);

        _a.Kill();
        _b.ExpectOk(write, TimeSpan.FromSeconds(10));
        var got = _c.Ok($"get o {(2L << 20) - 1} 2 5000");
        Assert.That(ClientProcess.Field(got, "first"), Is.EqualTo("8"));
    }

    [Test]
    public void Write_OnBlocksNextToAHeldRange_DoesNotWait()
    {
        // Contract: locks are per block (here 4 KiB): a get of [0, 4096) holds block 0 only (the seed's end index,
        // one too many on a block boundary, is not reproduced), so writes to block 1 do not wait, while a write
        // overlapping block 0 does.
        _a.Ok($"create-container small {SharedStoreClient.ProcessGroupId} 4096");
        _a.Ok($"create-object p {64 * 1024}");
        _b.Ok("join-container small");
        _b.Ok("join-object p");

        string lease = _a.Ok("get p 0 4096 5000")[0];
        _b.Ok("write p 4096 300 1 30000", TimeSpan.FromSeconds(2));
        int overlapping = _b.Send("write p 4000 200 2 30000");
        _b.ExpectNoAnswerYet(overlapping, because: "A holds block 0, which the write overlaps");
        WaitUntilWriterWaits(_broker, "small", "p", 0, _b.Pid);
        _a.Ok($"put {lease}");
        _b.ExpectOk(overlapping);
        Assert.That(ClientProcess.Field(_a.Ok("get p 4199 1 5000"), "first"), Is.EqualTo("2"));
        Assert.That(ClientProcess.Field(_a.Ok("get p 4200 1 5000"), "first"), Is.EqualTo("1"));
    }

    [Test]
    public void Write_WriterProcessKilledHoldingWriteLocks_GetsProceedAndAWholeBlockWriteClearsTorn()
    {
        // Contract: the broker releases the write locks of a writer that died: gets of those blocks complete (marked
        // torn, as the data may be half written), other blocks stay untorn, and a complete write of a block clears
        // its torn mark. The dead writer's wait on a held block does not block later writers either.
        string held = _a.Ok($"get o {2L << 20} 10 5000")[0];
        int write = _b.Send($"write o 0 {4L << 20} 6 30000"); // write-locks blocks 0 and 1, then waits on block 2
        _b.ExpectNoAnswerYet(write, because: "A holds block 2");
        WaitUntilWriterWaits(_broker, "locks", "o", 2, _b.Pid); // blocks 0 and 1 are write-locked by then
        _b.Kill();

        var block0 = _c.Ok("get o 0 10 10000");
        Assert.That(ClientProcess.Field(block0, "torn"), Is.EqualTo("1"), "a writer died holding block 0's write lock: it may have written part of it");
        Assert.That(ClientProcess.Field(_c.Ok($"get o {3L << 20} 10 10000"), "torn"), Is.EqualTo("0"), "block 3 was never write-locked");
        _c.Ok($"put {block0[0]}");
        _a.Ok($"put {held}");

        _c.Ok($"write o 0 {1L << 20} 4 10000");
        _c.Ok($"write o {2L << 20} 10 4 10000");
        var after = _c.Ok("get o 0 10 10000");
        Assert.That(ClientProcess.Field(after, "torn"), Is.EqualTo("0"), "a whole-block write clears the torn mark");
        Assert.That(ClientProcess.Field(after, "first"), Is.EqualTo("4"));
    }

    [Test]
    public void ObjectLease_PutAfterItsHandleWasLeftWithAnotherHandleOpen_ReleasesTheReadHold()
    {
        // Bug: Leave() of one of two handles to the same object is allowed while this process holds leases (holds
        // are per process, so the other handle may own them), but SharedObject.Put skipped the release once its
        // handle was closed, "because the broker released everything". The membership was still alive, so the read
        // hold stayed forever: writers of that block waited until the process exited.
        using var client = ConnectInProcess(_broker);
        var c = client.CreateContainer("c", Gid);
        var h1 = c.CreateObject("x", 4096);
        using var h2 = c.JoinObject("x");
        var lease = h1.Get(0, 10, TimeSpan.FromSeconds(5));
        h1.Dispose();
        lease.Dispose();
        Assert.DoesNotThrow(() => h2.Write(0, [1, 2, 3], TimeSpan.FromSeconds(2)), "the lease was put: nothing holds the block");
    }
}
