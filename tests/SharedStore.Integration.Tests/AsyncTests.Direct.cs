using SharedStore.TestClient;

namespace SharedStore.Integration.Tests;

/// <summary>
/// Direct writes (issue 16, part 4): an awrite larger than a slot's inline bytes whose blocks are free, while nothing
/// of its process is pending, is applied by the caller under the write locks and born completed; otherwise it is
/// staged as before, and either way the process's writes land in submission order (docs/ARCHITECTURE.md §9.5).
/// </summary>
public sealed partial class AsyncTests
{
    private const string AsyncMessagesMetric = "sharedstore.broker.async.messages";

    [Test]
    public void AWrite_BlocksFreeAndNothingPending_AppliedByTheCallerAndBornCompleted()
    {
        // Contract: with every block free and nothing pending, the awrite is in the object when the call returns: its
        // status reads Completed at once (no wait), opreturn is the byte count, opcancel answers false and changes
        // nothing, awaiting returns the byte count, and its id is negative (no ring position). The broker applied no
        // message for it (its async.messages counter does not move) and the client counts it as direct. Another
        // process reads the bytes, and the object's version moved by one with the written blocks changed, as after a
        // synchronous Write.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid, new ContainerOptions { BlockSize = 64 << 10 });
        using var obj = c.CreateObject("o", MiB);
        var reader = JoinedClient(broker, "reader");
        Assert.That(Await(obj.AWrite(0, Pattern(64, 7))), Is.EqualTo(64), "an inline write opens the channel and goes through the ring");
        Assert.That(client.WaitForAsyncOperations(Soon), Is.True); // its batch is over (CompletedThrough), not only its status
        WaitUntil(() => BrokerMetric(client, AsyncMessagesMetric) >= 1, "the broker to count the inline write");
        double appliedBefore = BrokerMetric(client, AsyncMessagesMetric);
        long directBefore = client.DirectAsyncWrites;
        long versionBefore = obj.Version;

        const int Length = 200_000;
        const long Offset = 70_000; // blocks 1 to 4 of 64 KiB
        var op = obj.AWrite(Offset, Pattern(Length, 11));

        Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), "born completed");
        Assert.That(op.Id, Is.Negative, "no ring position");
        Assert.That(op.Result, Is.EqualTo(Length), "opreturn");
        Assert.That(op.Cancel(), Is.False, "opcancel of a completed write");
        Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), "still completed after opcancel");
        Assert.That(op.Error, Is.EqualTo(ErrorCode.Ok));
        Assert.That(op.Wait(TimeSpan.Zero), Is.True, "finished without waiting");
        Assert.That(Await(op), Is.EqualTo(Length));
        Assert.That(client.DirectAsyncWrites, Is.EqualTo(directBefore + 1), "counted as direct");
        Assert.That(BrokerMetric(client, AsyncMessagesMetric), Is.EqualTo(appliedBefore), "the broker applied no message for it");
        Assert.That(reader.Ok($"read o {Offset} {Length}")[0], Is.EqualTo(Payload.Format(Payload.Checksum(Pattern(Length, 11)))), "another process reads the bytes");
        Assert.That(obj.Version, Is.EqualTo(versionBefore + 1), "one write, one version");
        Assert.That(obj.ChangedBlocksSince(versionBefore), Is.EqualTo(new long[] { 1, 2, 3, 4 }), "the blocks it wrote");
    }

    [Test]
    public void AWrite_BlockWriteHeldByAnotherProcess_IsStagedAndLandsAfterThatWrite()
    {
        // Contract: when a block of the range is write-held by another process (B owns blocks 0 and 1 and waits for
        // block 2, which A leases), the awrite does not wait: it returns staged and in progress, not counted as direct.
        // Once A puts, B's write completes, then the staged write lands over it: block 0 ends with the awrite's bytes,
        // the rest of B's range with B's.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 4 * MiB);
        var (a, b, held, write) = WriterHoldingBlocks0And1(broker);
        long directBefore = client.DirectAsyncWrites;

        var op = obj.AWrite(4096, Pattern(100_000, 21));

        Assert.That(op.Status, Is.EqualTo(AsyncStatus.InProgress), "staged: block 0 is B's");
        Assert.That(op.Id, Is.Not.Negative, "a ring position");
        Assert.That(client.DirectAsyncWrites, Is.EqualTo(directBefore), "not direct");
        a.Ok($"put {held}");
        b.ExpectOk(write);
        Assert.That(Await(op), Is.EqualTo(100_000));
        byte[] expected = new byte[3 * MiB];
        expected.AsSpan().Fill(6);
        Pattern(100_000, 21).CopyTo(expected, 4096);
        AssertContent(obj, 0, expected, "B's write, then the staged awrite over it");
    }

    [Test]
    public void AWrite_BlockLeasedByAnotherProcess_IsStagedAndLandsOnceItIsPut()
    {
        // Contract: a read lease of another process on a block of the range also sends the awrite to the ring (a
        // direct write never waits for readers); it lands once the lease is put.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 2 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok($"get o {MiB} 10 5000")[0];

        var op = obj.AWrite(MiB - 1000, Pattern(5000, 31));

        Assert.That(op.Status, Is.EqualTo(AsyncStatus.InProgress), "staged behind the lease");
        Assert.That(client.DirectAsyncWrites, Is.Zero);
        reader.Ok($"put {lease}");
        Assert.That(Await(op), Is.EqualTo(5000));
        AssertContent(obj, MiB - 1000, Pattern(5000, 31), "landed after the put");
    }

    [Test]
    public void AWrite_FreeBlocksWhileAnEarlierWriteOfThisProcessIsPending_IsStagedAndDoesNotOvertakeIt()
    {
        // Contract: the order of one process's writes holds across the two paths. The broker's applier is kept busy
        // with W0, an awrite to object "x" whose block another process leases; W1, a 64-byte (inline, so always
        // ring) awrite to "o", waits in the ring behind it. W2 then writes a range of "o" covering W1's, whose blocks
        // are free: taken directly it would land before W1 and W1 would overwrite part of it. It must be staged (in
        // progress, not direct), and after the lease is put the range holds W2's bytes. Seen failing with the
        // "nothing pending" rule removed (W2 went direct; the range then ended with W1's 64 bytes in it).
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", MiB);
        using var x = c.CreateObject("x", MiB);
        var reader = ConnectWithOptions(broker, "reader", "");
        reader.Ok("join-container c");
        reader.Ok("join-object x");
        string lease = reader.Ok("get x 0 10 5000")[0];

        var w0 = x.AWrite(0, Pattern(1000, 40)); // staged: x's block 0 is leased
        var w1 = obj.AWrite(100, Pattern(64, 41)); // inline: through the ring, behind W0
        WaitUntil(() => BrokerOwnsBlockOf(client, "x", 0), "the applier to take x's block 0 and wait for the lease");
        var w2 = obj.AWrite(100, Pattern(3000, 42));
        var (s0, s1, s2) = (w0.Status, w1.Status, w2.Status);
        long direct = client.DirectAsyncWrites;
        byte[] before = Read(obj, 100, 3000);
        reader.Ok($"put {lease}");
        Assert.That(Await(w2), Is.EqualTo(3000));
        Assert.That(Await(w1), Is.EqualTo(64));
        Assert.That(Await(w0), Is.EqualTo(1000));
        AssertContent(obj, 100, Pattern(3000, 42), "W2, the later write, wins");

        Assert.That(s0, Is.EqualTo(AsyncStatus.InProgress), "W0 waits for the lease");
        Assert.That(s1, Is.EqualTo(AsyncStatus.InProgress), "W1 waits behind W0");
        Assert.That(s2, Is.EqualTo(AsyncStatus.InProgress), "W2 is staged behind W1, not applied directly");
        Assert.That(direct, Is.Zero);
        Assert.That(before, Is.EqualTo(new byte[3000]), "nothing of W1 or W2 had landed while W0 waited");

        Assert.That(client.WaitForAsyncOperations(Soon), Is.True); // the batch is over, not only W2's status
        var w3 = obj.AWrite(100, Pattern(3000, 43));
        Assert.That(w3.Status, Is.EqualTo(AsyncStatus.Completed), "nothing pending any more: direct again");
        AssertContent(obj, 100, Pattern(3000, 43), "W3");
    }

    [Test]
    public void AWrite_Direct_AWholeBlockWriteClearsTornAndAPartialOneKeepsIt()
    {
        // Contract: a direct awrite leaves the torn marks as a synchronous Write does. B dies holding the write locks
        // of blocks 0 and 1 (waiting for block 2, leased by A), so both are torn. A direct awrite of the whole of
        // block 0 clears its mark; a direct awrite of part of block 1 keeps it.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 4 * MiB);
        var (a, b, held, write) = WriterHoldingBlocks0And1(broker);
        b.Kill();
        var block0 = a.Ok("get o 0 10 10000"); // waits until the broker released the dead writer's locks
        Assert.That(ClientProcess.Field(block0, "torn"), Is.EqualTo("1"), "B died writing block 0");
        a.Ok($"put {block0[0]}");
        a.Ok($"put {held}");
        using (var l1 = obj.Get(MiB, 10, Soon))
        {
            Assert.That(l1.Torn, Is.True, "B died writing block 1");
        }

        var whole = obj.AWrite(0, Pattern(MiB, 51));
        var part = obj.AWrite(MiB + 10, Pattern(1000, 52));

        Assert.That(whole.Status, Is.EqualTo(AsyncStatus.Completed), "direct");
        Assert.That(part.Status, Is.EqualTo(AsyncStatus.Completed), "direct");
        using (var l0 = obj.Get(0, 10, Soon))
        {
            Assert.That(l0.Torn, Is.False, "a whole-block direct write clears the torn mark");
        }

        using (var l1 = obj.Get(MiB, 10, Soon))
        {
            Assert.That(l1.Torn, Is.True, "a partial direct write leaves it");
        }
    }

    [Test]
    public void AWrite_Direct_InADurableContainer_IsMarkedDirtyAndSurvivesFlushKillAndRestart()
    {
        // Contract: a direct awrite marks its blocks dirty as a synchronous Write does, so the flush writes them back:
        // after a flush, a kill -9 of the broker and a restart, the bytes are there. Without the dirty marks the
        // write-back would skip the blocks and the restored object would read zeros.
        using var broker = StartBroker();
        string store = Path.Combine(broker.Directory, "store");
        Directory.CreateDirectory(store);
        byte[] data = Pattern((2 * MiB) + 4321, 61);
        using (var client = ConnectInProcess(broker))
        {
            var dc = client.CreateContainer("dur", Gid, new ContainerOptions { DurablePath = store });
            var o = dc.CreateObject("o", data.Length + 100);
            var op = o.AWrite(50, data);
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), "direct");
            Assert.That(client.DirectAsyncWrites, Is.EqualTo(1));
            dc.Flush(Soon);
        }

        broker.Kill();
        using var again = Track(BrokerProcess.StartOn(broker.Directory, waitReady: true));
        using var client2 = ConnectInProcess(broker);
        var o2 = client2.JoinContainer("dur").JoinObject("o");
        AssertContent(o2, 50, data, "the flushed direct awrite came back");
    }

    /// <summary>Two TestClients on c/o (1 MiB blocks): A leases block 2, and B's write of [0, 3 MiB) of bytes 6 has
    /// write-locked blocks 0 and 1 and waits for block 2 (observed in the broker's holders). Returns A's lease and
    /// the request number of B's write.</summary>
    private (ClientProcess A, ClientProcess B, string Lease, int Write) WriterHoldingBlocks0And1(BrokerProcess broker)
    {
        var a = JoinedClient(broker, "a");
        var b = JoinedClient(broker, "b");
        string held = a.Ok($"get o {2 * MiB} 10 5000")[0];
        int write = b.Send($"write o 0 {3 * MiB} 6 30000"); // write-locks blocks 0 and 1, then waits on block 2
        b.ExpectNoAnswerYet(write, because: "A leases block 2");
        WaitUntilWriterWaits(broker, "c", "o", 2, b.Pid);
        return (a, b, held, write);
    }

    /// <summary>A broker metric by name (the status call's snapshot).</summary>
    private static double BrokerMetric(SharedStoreClient client, string name) =>
        client.Status().Metrics.Single(m => m.Name == name && m.Tags.Length == 0).Value;

    /// <summary>Whether the broker's lock slot owns block <paramref name="block"/> of c/<paramref name="objectName"/>.</summary>
    private static bool BrokerOwnsBlockOf(SharedStoreClient client, string objectName, long block)
    {
        var holders = client.Call(new Protocol.Request { Holders = new Protocol.HoldersRequest { ContainerName = "c", ObjectName = objectName } }, Soon, default).Response.Holders;
        return holders.Blocks.Any(b => (long)b.Block == block && b.Writer is { } w && w.Slot == Regions.BlockLockDescriptor.BrokerSlot(1));
    }
}
