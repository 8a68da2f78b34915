using System.Diagnostics;
using System.Globalization;
using SharedStore.Protocol;
using SharedStore.Regions;
using SharedStore.TestClient;

namespace SharedStore.Integration.Tests;

/// <summary>
/// The asynchronous path (issue 5, item 6) with real processes: a broker process, this test process as one client,
/// and TestClient processes that submit, hold leases, cancel, or get killed. Payloads are <see cref="Payload"/>
/// patterns of a seed, so every process computes the same bytes; each test reads the object back from a process
/// other than (or in addition to) the submitter.
/// </summary>
[Category("Async")]
public sealed partial class AsyncTests : CrossProcessTest
{
    /// <summary>'Should happen' waits of this suite (a completion, a read, a membership release).</summary>
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(10);

    private const int MiB = 1 << 20;

    private static long Gid => SharedStoreClient.ProcessGroupId;

    // ---- 1. Ordering -----------------------------------------------------------------------------------------

    [TestCase("threadpool")]
    [TestCase("iouring")]
    public void AWrite_OverlappingSubmissionsWithoutWaiting_ApplyInSubmissionOrder(string scheduler)
    {
        // Contract: one process's awrites to overlapping ranges apply in submission order, whichever path carries
        // them (inline in the ring slot, staged, chunked under one hold of the range's locks). 1 000 writes are
        // submitted back to back without waiting, on each of the broker's apply schedulers: first three same-range
        // series (inline [0,64), staged [4 KiB,+100 000), chunked [1 MiB,+600 KiB)) interleaved, after which each range
        // must hold its last submission's bytes; then random overlapping ranges and sizes across the three paths,
        // after which the object must equal the submissions applied in order to a local buffer. The broker batches
        // and groups non-overlapping writes; a group that took two overlapping writes and applied them in another
        // order, or a batch taken out of ring order, leaves older bytes somewhere and fails the comparison.
        using var broker = StartBroker("--async-scheduler", scheduler);
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = MiB); // chunks of 256 KiB
        using var c = client.CreateContainer("c", Gid);
        const int Size = 4 * MiB;
        using var obj = c.CreateObject("o", Size);
        var expected = new byte[Size];
        var ops = new List<(AsyncOperation Op, int Length)>();
        ulong seed = 100;
        void Submit(long offset, int length)
        {
            byte[] data = Pattern(length, seed++);
            ops.Add((obj.AWrite(offset, data), length));
            data.CopyTo(expected, offset);
        }

        for (int i = 0; i < 200; i++)
        {
            Submit(0, 64);
            if (i % 4 == 0)
            {
                Submit(4096, 100_000);
            }

            if (i % 40 == 0)
            {
                Submit(MiB, 600 << 10);
            }
        }

        Assert.That(client.WaitForAsyncOperations(Soon), Is.True, "the same-range series did not complete in time");
        AssertContent(obj, 0, expected, "each same-range series must end with its last submission");

        var rng = new Random(5);
        for (int i = 0; i < 700; i++)
        {
            int kind = rng.Next(20);
            if (kind < 12)
            {
                Submit(rng.Next(0, 512), rng.Next(1, 85)); // inline, piling up on a few hundred bytes
            }
            else if (kind < 19)
            {
                Submit(rng.Next(0, 256 << 10), rng.Next(85, 200_000)); // staged, over the inline ones
            }
            else
            {
                Submit(rng.Next(0, MiB), rng.Next(300_000, 1_200_000)); // chunked, over everything
            }
        }

        Assert.That(client.WaitForAsyncOperations(Soon), Is.True, "the writes did not complete in time");
        foreach (var (op, length) in ops)
        {
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), $"{op}");
            Assert.That(op.Result, Is.EqualTo(length), $"opreturn of {op}");
        }

        AssertContent(obj, 0, expected, "the object after 1 000 overlapping awrites");
    }

    [TestCase("broker", TestName = "AWrite_EachRangeOverlapsThePreviousPartly_FromAnotherProcess_EndsAsAppliedInOrder")]
    [TestCase("client", TestName = "AWrite_EachRangeOverlapsThePreviousPartly_DirectAndStagedMixed_FromAnotherProcess_EndsAsAppliedInOrder")]
    public void AWrite_EachRangeOverlapsThePreviousPartly_FromAnotherProcess(string writePath)
    {
        // Contract: the order holds for a sliding window of writes, each overlapping the previous one in part, as a
        // TestClient process submits them (inline 80 B stepping 50, staged 3 000 B stepping 1 000, chunked 700 KiB
        // stepping 300 KiB, then inline again over the staged ones), none waited for. The final content, read by this
        // process, must equal applying them in submission order; a swap of any two neighbours changes the bytes where
        // they overlap.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        const int Size = 4 * MiB;
        using var obj = c.CreateObject("o", Size);
        // "broker": through the ring only, so the ids are consecutive ring positions. "client": the direct path is
        // allowed (issue 16), so the writes larger than a slot go direct or staged as the applier keeps up, and the
        // order must hold across the two paths.
        var writer = ConnectWithOptions(broker, "writer", $"staging=1048576 write-path={writePath}");
        writer.Ok("join-container c");
        writer.Ok("join-object o");

        var expected = new byte[Size];
        (int Count, long Offset, long Step, int Length, ulong Seed)[] sequences =
        [
            (400, 0, 50, 80, 1_000),
            (100, 10_000, 1_000, 3_000, 2_000),
            (6, 100_000, 300 << 10, 700 << 10, 3_000),
            (400, 9_000, 50, 80, 4_000),
        ];
        foreach (var (count, offset, step, length, seed) in sequences)
        {
            var ids = writer.Ok($"awrite-seq o {count} {offset} {step} {length} {seed}");
            if (writePath == "broker")
            {
                Assert.That(ClientProcess.Number(ids[1]) - ClientProcess.Number(ids[0]), Is.GreaterThanOrEqualTo(count - 1));
            }

            for (int i = 0; i < count; i++)
            {
                Pattern(length, seed + (ulong)i).CopyTo(expected, offset + (i * step));
            }
        }

        writer.Ok("wait-async 10000", Soon);
        AssertContent(obj, 0, expected, "the object after the sliding-window awrites of another process");
    }

    // ---- 2. Cancel against apply -----------------------------------------------------------------------------

    [Test]
    public void OpCancel_RacingTheApplier_InThisProcess_CanceledXorCompletedAndOnlyCompletedBytesLand()
    {
        // Contract: opcancel and the broker's applier race for each operation's status word and exactly one wins. An
        // operation ends Canceled (opcancel answered true, opreturn is -Canceled, an await throws
        // OperationCanceledException) XOR Completed (opcancel answered false, opreturn is its length); a canceled
        // operation's bytes never reach the object and a completed one's always do. 1 200 rounds, inline then staged,
        // each on a fresh range with its own pattern, cancel after a random 0–200 µs (the applier is caught asleep,
        // waking, spinning or applying); every fourth round cancels through an await's CancellationToken instead.
        // Both outcomes must occur, or the race was not exercised.
        const int InlineRounds = 800, StagedRounds = 400, InlineLength = 64, StagedLength = 2_000;
        const long StagedBase = InlineRounds * InlineLength;
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncWritePath = AsyncWritePath.Broker); // the staged rounds race the applier, not born completed
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", StagedBase + (StagedRounds * StagedLength));
        var rng = new Random(11);
        var canceledRound = new bool[InlineRounds + StagedRounds];
        for (int r = 0; r < canceledRound.Length; r++)
        {
            var (offset, length) = RoundRange(r);
            if (r % 32 == 0)
            {
                Thread.Sleep(1); // let the applier fall asleep now and then
            }

            var op = obj.AWrite(offset, Pattern(length, 10_000 + (ulong)r));
            SpinMicroseconds(rng.Next(201));
            bool canceled;
            if (r % 4 == 3)
            {
                using var cts = new CancellationTokenSource();
                Task<long> awaited = op.AsValueTask(cts.Token).AsTask();
                cts.Cancel();
                try
                {
                    Assert.That(awaited.WaitAsync(Soon).GetAwaiter().GetResult(), Is.EqualTo(length), $"round {r}: await");
                    canceled = false;
                }
                catch (OperationCanceledException)
                {
                    canceled = true;
                }
            }
            else
            {
                canceled = op.Cancel();
                Assert.That(op.Wait(Soon), Is.True, $"round {r}: {op} did not finish");
            }

            AssertCanceledXorCompleted(op, canceled, length, $"round {r}");
            canceledRound[r] = canceled;
        }

        using (var lease = obj.Get(0, obj.Size, Soon))
        {
            for (int r = 0; r < canceledRound.Length; r++)
            {
                var (offset, length) = RoundRange(r);
                byte[] want = canceledRound[r] ? new byte[length] : Pattern(length, 10_000 + (ulong)r);
                Assert.That(lease.ReadOnlySpan.Slice((int)offset, length).SequenceEqual(want), Is.True,
                    $"round {r} ({(canceledRound[r] ? "canceled: its bytes must not appear" : "completed: its bytes must be there")})");
            }
        }

        int canceledCount = canceledRound.Count(x => x);
        TestContext.Progress.WriteLine($"  {canceledCount} canceled, {canceledRound.Length - canceledCount} completed");
        Assert.That(canceledCount, Is.InRange(1, canceledRound.Length - 1), "both outcomes must occur for the race to be exercised");

        static (long Offset, int Length) RoundRange(int r) =>
            r < InlineRounds ? ((long)r * InlineLength, InlineLength) : (StagedBase + ((long)(r - InlineRounds) * StagedLength), StagedLength);
    }

    [Test]
    public void OpCancel_RacingTheApplier_InAnotherProcess_CanceledXorCompletedAndOnlyCompletedBytesLand()
    {
        // Contract: as above with a TestClient process as the submitter and canceler (its cancel-rounds command
        // checks, per round, that opcancel's answer matches the final status and opreturn): 600 inline and 200 staged
        // rounds on fresh ranges, then this process reads the object and finds exactly the completed rounds' bytes,
        // zeros where a round was canceled.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", MiB);
        var writer = ConnectWithOptions(broker, "writer", "write-path=broker"); // the staged rounds race the applier
        writer.Ok("join-container c");
        writer.Ok("join-object o");
        (int Rounds, long Offset, int Length, ulong Seed)[] series = [(600, 0, 64, 5_000), (200, 40_000, 3_000, 7_000)];
        int canceled = 0, total = 0;
        foreach (var (rounds, offset, length, seed) in series)
        {
            string outcomes = writer.Ok($"cancel-rounds o {rounds} {offset} {length} {seed} 200", TimeSpan.FromSeconds(60))[0];
            Assert.That(outcomes, Has.Length.EqualTo(rounds));
            using var lease = obj.Get(offset, (long)rounds * length, Soon);
            for (int r = 0; r < rounds; r++)
            {
                bool wasCanceled = outcomes[r] == 'C';
                byte[] want = wasCanceled ? new byte[length] : Pattern(length, seed + (ulong)r);
                Assert.That(lease.ReadOnlySpan.Slice(r * length, length).SequenceEqual(want), Is.True,
                    $"{length}-byte round {r} ({(wasCanceled ? "canceled: its bytes must not appear" : "completed: its bytes must be there")})");
            }

            canceled += outcomes.Count(ch => ch == 'C');
            total += rounds;
        }

        TestContext.Progress.WriteLine($"  {canceled} canceled, {total - canceled} completed");
        Assert.That(canceled, Is.InRange(1, total - 1), "both outcomes must occur for the race to be exercised");
    }

    [Test]
    public void OpCancel_ChunkedWriteNotPickedUpYet_IsCanceledAsAWhole()
    {
        // Contract: opcancel of a chunked write (larger than a quarter of staging: several ring messages applied
        // under one hold of the whole range's locks) that the applier has not reached returns true, the operation
        // ends Canceled, and none of its chunks reaches the object: the whole 2.5 MiB range keeps its zeros, while
        // the writes before and after it apply. The applier is held on an earlier write to a block that another
        // process leases, so the cancel deterministically comes first; a cancel that only marked the last chunk, or
        // chunks applied before the first chunk's status was decided, leave pattern bytes in the range.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = 4 * MiB); // chunks of 1 MiB
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 4 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok("get o 0 4096 5000")[0];

        var before = obj.AWrite(0, Pattern(64, 1));
        WaitUntil(() => BrokerOwnsBlock(client, 0), "the applier waits for the reader's block 0");
        byte[] big = Pattern(5 * MiB / 2, 2);
        var chunked = obj.AWrite(MiB, big);
        Assert.That(chunked.Cancel(), Is.True, "the chunked write was not picked up: opcancel must win");
        Assert.That(chunked.Status, Is.EqualTo(AsyncStatus.Canceled));
        var after = obj.AWrite(MiB + 100, Pattern(64, 3));

        reader.Ok($"put {lease}");
        Assert.That(Await(before), Is.EqualTo(64));
        Assert.That(Await(after), Is.EqualTo(64));
        Assert.Throws<OperationCanceledException>(() => Await(chunked));
        Assert.That(chunked.Result, Is.EqualTo(-(long)ErrorCode.Canceled));

        byte[] expected = new byte[4 * MiB];
        Pattern(64, 1).CopyTo(expected, 0);
        Pattern(64, 3).CopyTo(expected, MiB + 100);
        AssertContent(obj, 0, expected, "no chunk of the canceled write may appear");
    }

    [Test]
    public void OpCancel_ChunkedWriteAlreadyApplying_ReturnsFalseAndTheWholeWriteLands()
    {
        // Contract: once the applier took a chunked write (it holds the first block of the range and waits for a
        // reader of another process to leave the second), opcancel returns false and the write completes as a whole
        // when the reader leaves: every byte of the 2.5 MiB range. A cancel that stopped the remaining chunks would
        // leave zeros in the tail.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = 4 * MiB);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 4 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok($"get o {2 * MiB} 4096 5000")[0];

        byte[] big = Pattern(5 * MiB / 2, 4);
        var chunked = obj.AWrite(MiB, big);
        WaitUntil(() => BrokerOwnsBlock(client, 2), "the applier holds block 1 and waits for the reader of block 2");
        Assert.That(chunked.Cancel(), Is.False, "the write is being applied: opcancel must lose");
        Assert.That(chunked.Status, Is.EqualTo(AsyncStatus.InProgress));

        reader.Ok($"put {lease}");
        Assert.That(Await(chunked), Is.EqualTo(big.Length));
        byte[] expected = new byte[4 * MiB];
        big.CopyTo(expected, MiB);
        AssertContent(obj, 0, expected, "the whole chunked write");
        Assert.That(obj.AnyBlockTorn(), Is.False);
    }

    [Test]
    public void OpCancel_ChunkedWriteRacingTheApplier_IsAllOrNothing()
    {
        // Contract: a chunked write canceled at a random moment (0–400 µs after submission) is either applied whole or
        // not at all. 16 rounds over the same 2.5 MiB range, each with a new pattern: after each round the whole range
        // holds the new pattern (Completed) or exactly what it held before (Canceled), never a mix.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncStagingBytes = 4 * MiB;
            o.AsyncWritePath = AsyncWritePath.Broker; // chunked through the ring, racing the applier
        });
        using var c = client.CreateContainer("c", Gid);
        const int Length = 5 * MiB / 2;
        using var obj = c.CreateObject("o", 3 * MiB);
        var rng = new Random(3);
        byte[] current = new byte[Length];
        int canceled = 0;
        for (int r = 0; r < 16; r++)
        {
            byte[] data = Pattern(Length, 50 + (ulong)r);
            var op = obj.AWrite(MiB / 2, data);
            SpinMicroseconds(rng.Next(401));
            bool wasCanceled = op.Cancel();
            Assert.That(op.Wait(Soon), Is.True, $"round {r}");
            AssertCanceledXorCompleted(op, wasCanceled, Length, $"round {r}");
            if (!wasCanceled)
            {
                current = data;
            }
            else
            {
                canceled++;
            }

            AssertContent(obj, MiB / 2, current, $"round {r} ({(wasCanceled ? "canceled" : "completed")}): all or nothing");
        }

        TestContext.Progress.WriteLine($"  {canceled} of 16 canceled");
    }

    // ---- 3. Ring wrap-around ---------------------------------------------------------------------------------

    [Test]
    public void AWrite_TenThousandThroughA64SlotRing_AllCompleteAndOldStatusExpires()
    {
        // Contract: the ring and the staging area wrap around without losing or mixing anything. A client with 64
        // ring slots and 1 MiB of staging submits 10 000 writes (156 laps; every tenth one staged, 1 000 × 200 B),
        // each to its own range with its own pattern: all complete and every range holds its own bytes. Operation
        // ids are consecutive ring positions; the status of the last 64 stays readable (Completed, opreturn = length)
        // while every older operation's status entry was reused, so opstatus, opreturn and opcancel throw
        // InvalidOperationException instead of reporting a newer operation's status.
        const int Count = 10_000, Small = 16, Large = 200;
        const long LargeBase = (long)Count * Small;
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncRingSlots = 64;
            o.AsyncStagingBytes = MiB;
            o.AsyncWritePath = AsyncWritePath.Broker; // every write through the ring: the ids below are ring positions
        });
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", LargeBase + ((Count / 10) * Large));
        var ops = new AsyncOperation[Count];
        for (int i = 0; i < Count; i++)
        {
            var (offset, length) = Range(i);
            ops[i] = obj.AWrite(offset, Pattern(length, (ulong)i));
        }

        Assert.That(client.WaitForAsyncOperations(Soon), Is.True, "10 000 writes did not complete in time");
        for (int i = 1; i < Count; i++)
        {
            Assert.That(ops[i].Id, Is.EqualTo(ops[0].Id + i), "ids are consecutive ring positions");
        }

        using (var lease = obj.Get(0, obj.Size, Soon))
        {
            for (int i = 0; i < Count; i++)
            {
                var (offset, length) = Range(i);
                Assert.That(lease.ReadOnlySpan.Slice((int)offset, length).SequenceEqual(Pattern(length, (ulong)i)), Is.True, $"write {i}");
            }
        }

        for (int i = Count - 64; i < Count; i++)
        {
            Assert.That(ops[i].Status, Is.EqualTo(AsyncStatus.Completed), $"recent write {i}");
            Assert.That(ops[i].Result, Is.EqualTo(Range(i).Length), $"opreturn of recent write {i}");
        }

        for (int i = 0; i < Count - 64; i++)
        {
            var op = ops[i];
            Assert.Throws<InvalidOperationException>(() => _ = op.Status, $"opstatus of write {i}, more than a lap old");
        }

        var oldest = ops[Count - 65];
        Assert.Throws<InvalidOperationException>(() => _ = oldest.Result, "opreturn one lap old");
        Assert.Throws<InvalidOperationException>(() => oldest.Cancel(), "opcancel one lap old");

        static (long Offset, int Length) Range(int i) =>
            i % 10 == 9 ? (LargeBase + ((long)(i / 10) * Large), Large) : ((long)i * Small, Small);
    }

    // ---- 4. Full ring ----------------------------------------------------------------------------------------

    [TestCase(64, 64, TestName = "FullRing_FailMode_InlineWrites_RefusedWithBusyAndNothingLost")]
    [TestCase(40_000, 26, TestName = "FullRing_FailMode_StagedWrites_RefusedWithBusyAndNothingLost")]
    public void FullRing_FailMode(int length, int capacity)
    {
        // Contract: with AsyncFullMode.Fail a full ring (64 slots, for 64-byte inline writes) or full staging (1 MiB:
        // 26 writes of 40 000 B) refuses further submissions with a value: TryAWrite returns false and AWrite returns
        // an operation already Failed with Busy (opreturn -Busy; an await throws SharedStoreException Busy). The
        // broker cannot drain because another process holds a read lease on the block, so exactly the capacity is
        // accepted (slots and staging are freed only after their write applied). Nothing is applied under the
        // lease; once it is released every accepted write lands, and no refused write ever appears.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncRingSlots = 64;
            o.AsyncStagingBytes = MiB;
            o.AsyncFullMode = AsyncFullMode.Fail;
        });
        using var c = client.CreateContainer("c", Gid, new ContainerOptions { BlockSize = 2 * MiB });
        using var obj = c.CreateObject("o", 2 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok($"get o 0 {2 * MiB} 5000")[0];

        var accepted = new List<AsyncOperation>();
        int i = 0;
        while (obj.TryAWrite((long)i * length, Pattern(length, (ulong)i), out var op))
        {
            accepted.Add(op);
            Assert.That(++i, Is.LessThanOrEqualTo(capacity), "more submissions accepted than the ring or staging holds");
        }

        Assert.That(accepted, Has.Count.EqualTo(capacity));
        int firstRefused = i;
        for (int k = 0; k < 5; k++, i++)
        {
            Assert.That(obj.TryAWrite((long)i * length, Pattern(length, (ulong)i), out _), Is.False, "still full");
            var refused = obj.AWrite((long)i * length, Pattern(length, (ulong)i));
            Assert.That(refused.Status, Is.EqualTo(AsyncStatus.Failed));
            Assert.That(refused.Error, Is.EqualTo(ErrorCode.Busy));
            Assert.That(refused.Result, Is.EqualTo(-(long)ErrorCode.Busy));
            var e = Assert.Throws<SharedStoreException>(() => Await(refused));
            Assert.That(e!.Code, Is.EqualTo(ErrorCode.Busy));
        }

        Assert.That(accepted.All(op => op.Status == AsyncStatus.InProgress), Is.True, "nothing applies under the lease");
        Assert.That(reader.Ok($"leaseread {lease}")[0], Is.EqualTo(Payload.Format(Payload.Checksum(new byte[2 * MiB]))), "no write under the lease");
        reader.Ok($"put {lease}");

        foreach (var op in accepted)
        {
            Assert.That(Await(op), Is.EqualTo(length));
        }

        byte[] expected = new byte[2 * MiB];
        for (int k = 0; k < firstRefused; k++)
        {
            Pattern(length, (ulong)k).CopyTo(expected, (long)k * length);
        }

        AssertContent(obj, 0, expected, "accepted writes land, refused ones never");
        Assert.That(obj.TryAWrite(0, Pattern(length, 999), out var again), Is.True, "space again once drained");
        Assert.That(Await(again), Is.EqualTo(length));
    }

    [TestCase(64, 64, TestName = "FullRing_WaitMode_InlineWrites_TimeOutAndNothingLost")]
    [TestCase(40_000, 26, TestName = "FullRing_WaitMode_StagedWrites_TimeOutAndNothingLost")]
    public void FullRing_WaitMode(int length, int capacity)
    {
        // Contract: with AsyncFullMode.Wait and AsyncSubmitTimeout = 300 ms a submission to a full ring (or full
        // staging) waits that long, then throws SharedStoreException Timeout with nothing submitted; so does a
        // zero-copy AWrite of a rented buffer, which then still belongs to the caller (IsAvailable, disposable), and
        // RentBuffer itself when staging is full. Once the other process's lease is released every accepted write
        // lands and none of the timed-out ones. Staging keeps working afterwards: 40 more 100 000-byte writes (4 MiB
        // through 1 MiB of staging) complete, which fails if a timed-out submission leaked a staging range.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncRingSlots = 64;
            o.AsyncStagingBytes = MiB;
            o.AsyncSubmitTimeout = TimeSpan.FromMilliseconds(300);
        });
        using var c = client.CreateContainer("c", Gid, new ContainerOptions { BlockSize = 2 * MiB });
        using var obj = c.CreateObject("o", 4 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok($"get o 0 {2 * MiB} 5000")[0];

        var accepted = new List<AsyncOperation>();
        for (int i = 0; i < capacity; i++)
        {
            accepted.Add(obj.AWrite((long)i * length, Pattern(length, (ulong)i)));
        }

        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<SharedStoreException>(() => obj.AWrite((long)capacity * length, Pattern(length, 7_777)));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.Timeout));
        Assert.That(sw.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(250)).And.LessThan(Soon), "waited AsyncSubmitTimeout");
        Assert.That(obj.TryAWrite((long)capacity * length, Pattern(length, 7_778), out _), Is.False);

        if (length <= client.Live().Channel.InlineMax)
        {
            // The ring is full but staging is not: the rented buffer is granted, its submission times out.
            var buffer = client.RentBuffer(4096);
            Pattern(4096, 7_779).CopyTo(buffer.Span);
            var be = Assert.Throws<SharedStoreException>(() => obj.AWrite((long)capacity * length, buffer));
            Assert.That(be!.Code, Is.EqualTo(ErrorCode.Timeout));
            Assert.That(buffer.IsAvailable, Is.True, "a submission that timed out leaves the rented buffer with the caller");
            buffer.Dispose();
        }
        else
        {
            var re = Assert.Throws<SharedStoreException>(() => client.RentBuffer(length));
            Assert.That(re!.Code, Is.EqualTo(ErrorCode.Timeout));
        }

        Assert.That(reader.Ok($"leaseread {lease}")[0], Is.EqualTo(Payload.Format(Payload.Checksum(new byte[2 * MiB]))), "no write under the lease");
        reader.Ok($"put {lease}");
        foreach (var op in accepted)
        {
            Assert.That(Await(op), Is.EqualTo(length));
        }

        byte[] expected = new byte[2 * MiB];
        for (int k = 0; k < capacity; k++)
        {
            Pattern(length, (ulong)k).CopyTo(expected, (long)k * length);
        }

        AssertContent(obj, 0, expected, "accepted writes land, timed-out ones never");

        AsyncOperation last = default;
        for (int k = 0; k < 40; k++)
        {
            last = obj.AWrite(3 * MiB, Pattern(100_000, 8_000 + (ulong)k));
        }

        Assert.That(Await(last), Is.EqualTo(100_000));
        AssertContent(obj, 3 * MiB, Pattern(100_000, 8_039), "staging still cycles after the timeouts");
    }

    [Test]
    public void AWrite_ChunkedWriteStalledPastTheSubmitTimeout_IsNeverHalfSubmitted()
    {
        // Contract: a chunked write whose first chunk is in the ring is accepted: the broker holds the range's locks
        // from its first chunk to its last, so the call must finish staging the rest however long the broker takes,
        // not give up halfway. Here the write (1.5 MiB in 6 chunks, more than the 1 MiB of staging) waits for a reader
        // of another process while AsyncSubmitTimeout is 300 ms: the call is still waiting after 1 s, and completes
        // once the reader leaves, with the whole range written, no block torn, and the next write fine. (A call that
        // threw Timeout there would leave the broker holding the locks for chunks that never come: the next message
        // would be taken for a broken continuation, fail, and leave the range half written and torn.)
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncStagingBytes = MiB; // chunks of 256 KiB
            o.AsyncSubmitTimeout = TimeSpan.FromMilliseconds(300);
        });
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 4 * MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok($"get o {MiB} 4096 5000")[0];

        byte[] big = Pattern(3 * MiB / 2, 21);
        var submit = Task.Run(() => obj.AWrite(MiB / 2, big));
        Thread.Sleep(1000); // the contract itself: still waiting 1 s later, well past the 300 ms submit timeout
        Assert.That(submit.IsCompleted, Is.False,
            $"the chunked submission returned while its range was still leased: {(submit.IsFaulted ? submit.Exception!.InnerException!.Message : "completed")}");

        reader.Ok($"put {lease}");
        Assert.That(submit.Wait(Soon), Is.True, "the chunked submission did not finish after the reader left");
        Assert.That(Await(submit.Result), Is.EqualTo(big.Length));
        var next = obj.AWrite(MiB / 2, Pattern(64, 22));
        Assert.That(Await(next), Is.EqualTo(64));

        byte[] expected = new byte[4 * MiB];
        big.CopyTo(expected, MiB / 2);
        Pattern(64, 22).CopyTo(expected, MiB / 2);
        AssertContent(obj, 0, expected, "the chunked write, whole, then the next write");
        Assert.That(obj.AnyBlockTorn(), Is.False);
    }

    // ---- 5. Producer killed mid-claim ------------------------------------------------------------------------

    [Test]
    public void ProducerKilledBetweenClaimAndPublish_BlocksNoOneAndItsWriteNeverAppears()
    {
        // Contract: a client process killed (SIGKILL) after claiming a ring slot and filling it but before publishing
        // it blocks no one: while it lives and after it died, other processes' awrites complete; its published write
        // lands, its unpublished one never does; the broker releases its membership (its pid leaves the container's
        // members), so the creator's container_destroy completes within its timeout.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", MiB);
        var victim = JoinedClient(broker, "victim");
        var other = JoinedClient(broker, "other");

        string published = victim.Ok("awrite o 0 64 1")[0];
        Assert.That(victim.Ok($"await {published} 10000")[0], Is.EqualTo("Completed"));
        victim.Ok("claim-no-publish o 4096 64 2");

        AssertAWriteCompletes(other, "o", 8192, 3);
        Assert.That(Await(obj.AWrite(12288, Pattern(64, 4))), Is.EqualTo(64));

        int victimPid = (int)ClientProcess.Number(victim.Ok("pid")[0]);
        victim.Kill();
        AssertAWriteCompletes(other, "o", 16384, 5);
        Assert.That(Await(obj.AWrite(20480, Pattern(64, 6))), Is.EqualTo(64));
        WaitUntil(() => !MemberPids(client, "c").Contains(victimPid), $"the broker released the killed client's membership (pid {victimPid})");

        byte[] expected = new byte[24576];
        Pattern(64, 1).CopyTo(expected, 0);
        Pattern(64, 3).CopyTo(expected, 8192);
        Pattern(64, 4).CopyTo(expected, 12288);
        Pattern(64, 5).CopyTo(expected, 16384);
        Pattern(64, 6).CopyTo(expected, 20480);
        AssertContent(obj, 0, expected, "the unpublished write (at 4096) must not appear");

        other.Ok("leave-container");
        var sw = Stopwatch.StartNew();
        Assert.DoesNotThrow(() => c.Destroy(TimeSpan.FromSeconds(5)), "no member but the creator is left");
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    // ---- 6. Client killed after awrite -----------------------------------------------------------------------

    /// <summary>Who holds the read lease that keeps the writes of <see cref="AWrite_SubmitterKilled"/> pending.</summary>
    public enum Holder
    {
        None,
        OtherProcess,
        Submitter,
    }

    [TestCase(Holder.OtherProcess, TestName = "AWrite_SubmitterKilledWhileAnotherProcessLeasesTheBlock_AllStillComplete")]
    [TestCase(Holder.Submitter, TestName = "AWrite_SubmitterKilledWhileItLeasesTheBlockItself_AllStillComplete")]
    [TestCase(Holder.None, TestName = "AWrite_SubmitterKilledRightAfterSubmitting_AllStillComplete")]
    public void AWrite_SubmitterKilled(Holder holder)
    {
        // Contract: an accepted awrite completes even if its submitter dies right after. A TestClient submits inline
        // and staged writes to block 0 and a chunked one to block 1 (each to its own range, with its own pattern),
        // answers, and is SIGKILLed; within the timeout this process sees every byte of every write, and the dead
        // client's membership is released. With a lease on block 0, none has applied at the kill (opstatus of the
        // last says InProgress, the lease still sees zeros), so the broker must apply the dead client's ring:
        // - held by another process, released after the kill;
        // - held by the submitter itself: the broker must release the dead process's lock holds before it drains
        //   its ring, or the drain waits for a lease nobody will ever put.
        // Without a lease the kill follows the submission at once; how much is still pending then is up to the
        // scheduler, so that case guards the plain path and the two above force the pending one.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 2 * MiB);
        var submitter = JoinedClient(broker, "submitter", "staging=1048576");
        int submitterPid = (int)ClientProcess.Number(submitter.Ok("pid")[0]);
        ClientProcess? leaseHolder = holder switch
        {
            Holder.OtherProcess => JoinedClient(broker, "reader"),
            Holder.Submitter => submitter,
            _ => null,
        };
        string? lease = leaseHolder?.Ok($"get o 0 {MiB} 5000")[0];

        int inline = holder == Holder.None ? 3_000 : 40;
        (int Count, long Offset, long Step, int Length, ulong Seed)[] sequences =
        [
            (inline, 0, 64, 64, 1_000),
            (20, 200_000, 3_000, 3_000, 20_000),
            (1, MiB + 100_000, 0, 300_000, 30_000), // two chunks of 256 KiB (a quarter of the staging area)
        ];
        var expected = new byte[2 * MiB];
        string lastId = "";
        foreach (var (count, offset, step, length, seed) in sequences)
        {
            lastId = submitter.Ok($"awrite-seq o {count} {offset} {step} {length} {seed}")[1];
            for (int i = 0; i < count; i++)
            {
                Pattern(length, seed + (ulong)i).CopyTo(expected, offset + (i * step));
            }
        }

        if (leaseHolder is not null)
        {
            Assert.That(submitter.Ok($"opstatus {lastId}")[0], Is.EqualTo("InProgress"), "the lease holds the writes");
            Assert.That(leaseHolder.Ok($"leaseread {lease}")[0], Is.EqualTo(Payload.Format(Payload.Checksum(new byte[MiB]))), "nothing applied under the lease");
        }

        submitter.Kill();
        if (holder == Holder.OtherProcess)
        {
            leaseHolder!.Ok($"put {lease}");
        }

        WaitUntil(() => Read(obj, 0, 2 * MiB).AsSpan().SequenceEqual(expected), "every write of the killed submitter lands");
        WaitUntil(() => !MemberPids(client, "c").Contains(submitterPid), "the killed submitter's membership is released");
    }

    // ---- 7. Idle CPU and wake-ups ----------------------------------------------------------------------------

    [Test]
    public void Broker_ThreeIdleClientsWithOpenChannels_UsesAlmostNoCpu()
    {
        // Contract: a consumer with no work sleeps on a futex: a broker with three connected clients that each opened
        // their asynchronous channel (one awrite each, completed) and then stay idle uses less than 5% of a core over
        // 3 s, read from /proc/PID/stat (utime + stime). A busy-polling applier uses 100% per client. (The bound is
        // generous because this machine is shared; `sharedstore bench broker-idle-cpu` reports the exact figure.)
        using var broker = StartBroker();
        var clients = new List<ClientProcess>();
        for (int i = 0; i < 3; i++)
        {
            var cl = Connect(broker, $"idle{i}");
            if (i == 0)
            {
                cl.Ok($"create-container c {Gid}");
                cl.Ok("create-object o 65536");
            }
            else
            {
                cl.Ok("join-container c");
                cl.Ok("join-object o");
            }

            AssertAWriteCompletes(cl, "o", i * 64, (ulong)i);
            clients.Add(cl);
        }

        // Measured, not observed: the appliers spin 50 µs before they sleep; a broker that never stops spinning must
        // show up in the 3 s window below, so this only keeps the spin phase out of it.
        Thread.Sleep(300); // past every spin phase
        var before = ThreadTicks(broker.Pid);
        long total0 = ProcessTicks(broker.Pid);
        var sw = Stopwatch.StartNew();
        Thread.Sleep(3000);
        long used = ProcessTicks(broker.Pid) - total0;
        double seconds = sw.Elapsed.TotalSeconds;
        var after = ThreadTicks(broker.Pid);
        double percent = used / (double)UserHz / seconds * 100;
        string busiest = string.Join(", ", after
            .Select(kv => (kv.Value.Name, Ticks: kv.Value.Ticks - (before.TryGetValue(kv.Key, out var b) ? b.Ticks : 0)))
            .Where(t => t.Ticks > 0).OrderByDescending(t => t.Ticks).Take(5).Select(t => $"{t.Name} {t.Ticks}"));
        TestContext.Progress.WriteLine($"  broker used {percent:F2}% of a core over {seconds:F1} s ({used} ticks; {busiest})");
        Assert.That(percent, Is.LessThan(5.0), $"idle broker CPU; busiest threads (ticks): {busiest}");
    }

    [Test]
    public void Applier_AsleepOrSpinning_NeverMissesASubmission()
    {
        // Contract: the applier sleeps when idle yet never misses a submission: 200 rounds of (a random 0–3 ms pause,
        // so the applier is sometimes spinning, sometimes falling asleep, sometimes asleep) + awrite + wait all
        // complete promptly: at most 2 rounds (scheduling noise on a shared machine) take over 250 ms. A lost wake-up
        // is only rescued by the applier's 1 s sleep timeout, so a broken wake protocol makes most rounds that find
        // the applier asleep take hundreds of milliseconds.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 200 * 64);
        var rng = new Random(17);
        var latencies = new double[200];
        var slow = new List<string>();
        for (int r = 0; r < latencies.Length; r++)
        {
            int pauseUs = rng.Next(3001);
            if (pauseUs < 200)
            {
                SpinMicroseconds(pauseUs);
            }
            else
            {
                Thread.Sleep(TimeSpan.FromMicroseconds(pauseUs));
            }

            long start = Stopwatch.GetTimestamp();
            var op = obj.AWrite(r * 64, Pattern(64, (ulong)r));
            Assert.That(op.Wait(Soon), Is.True, $"round {r}: the write was never applied");
            latencies[r] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), $"round {r}");
            if (latencies[r] > 250)
            {
                slow.Add($"round {r} after a {pauseUs} µs pause: {latencies[r]:F0} ms");
                Assert.That(slow, Has.Count.LessThanOrEqualTo(2), $"rounds slow enough to be missed wake-ups: {string.Join("; ", slow)}");
            }
        }

        Array.Sort(latencies);
        TestContext.Progress.WriteLine($"  completion latency ms: p50 {latencies[100]:F3}, p99 {latencies[198]:F3}, max {latencies[^1]:F3}");
        byte[] expected = new byte[200 * 64];
        for (int r = 0; r < 200; r++)
        {
            Pattern(64, (ulong)r).CopyTo(expected, r * 64);
        }

        AssertContent(obj, 0, expected, "every round's write");
    }

    [Test]
    public void Await_OperationStillInProgress_CompletesPromptly()
    {
        // Contract: awaiting an operation that is still in progress completes as soon as it finishes: 100 rounds of
        // awrite + await (each await starting while its write is in flight, with the completion thread idle since the
        // previous round) have a median under 20 ms. A completion thread that only looked at a new awaiter after its
        // idle slice (200 ms) puts the median at 200 ms.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 65536);
        var latencies = new double[100];
        for (int r = 0; r < latencies.Length; r++)
        {
            long start = Stopwatch.GetTimestamp();
            var op = obj.AWrite(r * 64, Pattern(64, (ulong)r));
            Assert.That(Await(op), Is.EqualTo(64), $"round {r}");
            latencies[r] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        Array.Sort(latencies);
        TestContext.Progress.WriteLine($"  await latency ms: p50 {latencies[50]:F3}, p99 {latencies[98]:F3}, max {latencies[^1]:F3}");
        Assert.That(latencies[50], Is.LessThan(20), "median await latency");
    }

    // ---- 8. Bad input ----------------------------------------------------------------------------------------

    [Test]
    public void AWrite_OutsideTheObject_ThrowsArgumentOutOfRangeAndSubmitsNothing()
    {
        // Contract: an awrite (inline, staged, chunked, zero-copy, Try) or aread whose range is not inside the object
        // throws ArgumentOutOfRangeException before anything is submitted: the next accepted write takes the very
        // next ring position, a rented buffer stays with the caller, and nothing is held (the object can be written,
        // read and left afterwards).
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = MiB);
        using var c = client.CreateContainer("c", Gid);
        var obj = c.CreateObject("o", MiB);
        var first = obj.AWrite(0, Pattern(64, 1));
        Assert.That(Await(first), Is.EqualTo(64));

        Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(MiB - 10, Pattern(64, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(-1, Pattern(64, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(MiB + 1, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(MiB - 1000, Pattern(5_000, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(MiB / 2, Pattern(MiB, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.TryAWrite(MiB, Pattern(1, 2), out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => obj.ARead(MiB - 10, new byte[64]));
        using (var buffer = client.RentBuffer(4096))
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(MiB - 100, buffer));
            Assert.Throws<ArgumentOutOfRangeException>(() => obj.AWrite(0, buffer, 4097));
            Assert.That(buffer.IsAvailable, Is.True, "a refused zero-copy write leaves the buffer with the caller");
        }

        var next = obj.AWrite(64, Pattern(64, 3));
        Assert.That(next.Id, Is.EqualTo(first.Id + 1), "the refused calls took no ring position");
        Assert.That(Await(next), Is.EqualTo(64));
        obj.Write(128, Pattern(64, 4), Soon);
        byte[] expected = new byte[192];
        Pattern(64, 1).CopyTo(expected, 0);
        Pattern(64, 3).CopyTo(expected, 64);
        Pattern(64, 4).CopyTo(expected, 128);
        AssertContent(obj, 0, expected, "only the accepted writes");
        Assert.DoesNotThrow(obj.Leave, "nothing is held");
    }

    [Test]
    public void AWrite_ReadOnlyMember_FailsWithPermissionDeniedAndWritesNothing()
    {
        // Contract: in a creator-only container another user (nobody, in the container's group) may aread but its
        // awrite fails with PermissionDenied, and nothing is written.
        if (!ClientProcess.CanRunAsNobody(out string why))
        {
            Assert.Ignore($"needs a second user: {why}");
        }

        using var broker = StartBroker("--system");
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("shared", ClientProcess.NobodyId, new ContainerOptions { WritePolicy = WritePolicy.CreatorOnly });
        using var obj = c.CreateObject("o", 65536);
        Assert.That(Await(obj.AWrite(0, Pattern(64, 1))), Is.EqualTo(64), "the creator writes");

        var nobody = Connect(broker, "nobody", asNobody: true);
        Assert.That(ClientProcess.Field(nobody.Ok("join-container shared"), "canwrite"), Is.EqualTo("0"));
        nobody.Ok("join-object o");
        nobody.Err("awrite o 64 64 2", "PermissionDenied");
        nobody.Err("awrite o 1000 5000 2", "PermissionDenied");
        Assert.That(nobody.Ok("aread o 0 64 5000")[0], Is.EqualTo(Payload.Format(Payload.Checksum(Pattern(64, 1)))), "a read-only member reads");
        byte[] expected = new byte[8192];
        Pattern(64, 1).CopyTo(expected, 0);
        AssertContent(obj, 0, expected, "the refused writes wrote nothing");
    }

    [Test]
    public void AWrite_AfterLeave_ThrowsObjectDisposed()
    {
        // Contract: awrite, TryAWrite, zero-copy awrite and aread on an object that was left (directly, or with its
        // container) throw ObjectDisposedException; a leave first waits for this process's pending writes, so the one
        // submitted just before the leave is in the object.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var c = client.CreateContainer("c", Gid);
        var obj = c.CreateObject("o", 65536);
        var obj2 = c.CreateObject("o2", 65536);
        var op = obj.AWrite(0, Pattern(5_000, 1));
        obj.Leave();
        Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), "leave waits for the pending write");
        Assert.Throws<ObjectDisposedException>(() => obj.AWrite(0, Pattern(64, 2)));
        Assert.Throws<ObjectDisposedException>(() => obj.TryAWrite(0, Pattern(64, 2), out _));
        Assert.Throws<ObjectDisposedException>(() => obj.ARead(0, new byte[64]));
        using (var buffer = client.RentBuffer(64))
        {
            Assert.Throws<ObjectDisposedException>(() => obj.AWrite(0, buffer));
        }

        c.Leave();
        Assert.Throws<ObjectDisposedException>(() => obj2.AWrite(0, Pattern(64, 3)));

        using var again = client.JoinContainer("c");
        using var o = again.JoinObject("o");
        AssertContent(o, 0, Pattern(5_000, 1), "the write submitted before the leave");
    }

    [Test]
    public unsafe void ARead_InFlightWhenItsContainerIsLeft_KeepsTheMemoryMappedUntilItEnds()
    {
        // Contract (issue 14, item 4: mapped regions are kept alive through SafeHandle references wherever raw
        // pointers outlive a call): an aread that waits for its read lock on a pool thread uses the object's lock
        // records and data after ARead returned. Leaving the object and its container meanwhile must not unmap them
        // under it: the operation's reference on the object's view keeps both mappings until it ends (here: it is
        // canceled), and then they go. Before, the leave unmapped them at once and the waiting thread's next look at
        // the record faulted (the test process died).
        using var broker = StartBroker();
        using var a = ConnectInProcess(broker);
        using var b = ConnectInProcess(broker); // a second connection: a second member, with its own slot
        var c = a.CreateContainer("c", Gid);
        var obj = c.CreateObject("o", MiB);
        using var cb = b.JoinContainer("c");
        using var ob = cb.JoinObject("o");

        // Block 0 claimed for writing by b's slot, as any member can write the record: a live member's claim, which
        // neither a's leave nor a repair clears, so a's read waits for as long as the test wants.
        Interlocked.Exchange(ref obj.LockRecords->Owner, (uint)cb.Slot + 1);
        var op = obj.ARead(0, new byte[4096]);
        Assert.That(op.Status, Is.EqualTo(AsyncStatus.InProgress), "the read waits for block 0");
        nint data = obj.GetAttributes().DataAddress;
        var mapping = MappingAt(data);
        Assert.That(mapping, Is.Not.Null, "the object's data is mapped");

        obj.Leave();
        c.Leave();
        Assert.That(MappingAt(data), Is.EqualTo(mapping), "the left object's data is still mapped while its aread waits");
        Assert.That(op.Status, Is.EqualTo(AsyncStatus.InProgress));

        Assert.That(op.Cancel(), Is.True, "a read still waiting for its locks cancels");
        Assert.That(op.Status, Is.EqualTo(AsyncStatus.Canceled));
        var sw = Stopwatch.StartNew();
        while (MappingAt(data) == mapping && sw.Elapsed < Soon)
        {
            Thread.Sleep(10); // the waiting thread sees the cancellation within one 50 ms sleep slice
        }

        Assert.That(MappingAt(data), Is.Not.EqualTo(mapping), "the mapping goes once the canceled read let go of it");
    }

    /// <summary>The mapping of this process that contains <paramref name="address"/>, as its /proc/self/maps line's
    /// range, device and inode, or null.</summary>
    private static string? MappingAt(nint address)
    {
        ulong a = (ulong)address;
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            string[] range = f[0].Split('-');
            if (a >= ulong.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture)
                && a < ulong.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture))
            {
                return $"{f[0]} {f[3]} {f[4]}";
            }
        }

        return null;
    }

    [Test]
    public void AWrite_RentedBufferSubmittedTwice_ThrowsObjectDisposedAndSubmitsNothing()
    {
        // Contract: a rented buffer belongs to its operation once submitted: a second submission (and Span) throws
        // ObjectDisposedException and takes no ring position; so does submitting a disposed buffer. The first
        // submission's bytes land as they were when submitted.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 65536);
        var buffer = client.RentBuffer(4096);
        Pattern(4096, 1).CopyTo(buffer.Span);
        var op = obj.AWrite(0, buffer);
        Assert.That(buffer.IsAvailable, Is.False);
        Assert.Throws<ObjectDisposedException>(() => obj.AWrite(8192, buffer));
        Assert.Throws<ObjectDisposedException>(() => _ = buffer.Span);
        var disposed = client.RentBuffer(64);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => obj.AWrite(16384, disposed));

        var next = obj.AWrite(4096, Pattern(64, 2));
        Assert.That(next.Id, Is.EqualTo(op.Id + 1), "the refused submissions took no ring position");
        Assert.That(Await(op), Is.EqualTo(4096));
        Assert.That(Await(next), Is.EqualTo(64));
        byte[] expected = new byte[65536];
        Pattern(4096, 1).CopyTo(expected, 0);
        Pattern(64, 2).CopyTo(expected, 4096);
        AssertContent(obj, 0, expected, "the buffer's one submission and the next write");
    }

    [Test]
    public void BrokerKilled_WithPendingOperations_TheyFailWithBrokerUnavailable()
    {
        // Contract: when the broker dies (SIGKILL) with operations pending (held by another process's lease), every
        // one of them reports Failed with BrokerUnavailable within the timeout (opreturn -BrokerUnavailable), an
        // await started before the death and one started after throw SharedStoreException BrokerUnavailable,
        // WaitForAsyncOperations returns, and a new awrite throws BrokerUnavailable without submitting.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.AsyncStagingBytes = MiB);
        using var c = client.CreateContainer("c", Gid);
        using var obj = c.CreateObject("o", 2 * MiB);
        var reader = JoinedClient(broker, "reader");
        reader.Ok($"get o 0 {MiB} 5000");

        var ops = new List<AsyncOperation>();
        for (int i = 0; i < 10; i++)
        {
            ops.Add(obj.AWrite(i * 64, Pattern(64, (ulong)i)));
        }

        ops.Add(obj.AWrite(4096, Pattern(5_000, 20)));
        ops.Add(obj.AWrite(65536, Pattern(300_000, 21))); // chunked
        Task<long> early = ops[0].AsValueTask().AsTask();
        Assert.That(ops.All(op => op.Status == AsyncStatus.InProgress), Is.True);

        broker.Kill();
        foreach (var op in ops)
        {
            Assert.That(op.Wait(Soon), Is.True, $"{op} did not finish after the broker died");
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Failed), $"{op}");
            Assert.That(op.Error, Is.EqualTo(ErrorCode.BrokerUnavailable), $"{op}");
            Assert.That(op.Result, Is.EqualTo(-(long)ErrorCode.BrokerUnavailable), $"{op}");
        }

        var e1 = Assert.Throws<SharedStoreException>(() => early.WaitAsync(Soon).GetAwaiter().GetResult());
        Assert.That(e1!.Code, Is.EqualTo(ErrorCode.BrokerUnavailable));
        var e2 = Assert.Throws<SharedStoreException>(() => Await(ops[^1]));
        Assert.That(e2!.Code, Is.EqualTo(ErrorCode.BrokerUnavailable));
        Assert.That(client.WaitForAsyncOperations(Soon), Is.True);
        var e3 = Assert.Throws<SharedStoreException>(() => obj.AWrite(0, Pattern(64, 99)));
        Assert.That(e3!.Code, Is.EqualTo(ErrorCode.BrokerUnavailable), "a new awrite after the broker died");
        var e4 = Assert.Throws<SharedStoreException>(() => obj.AWrite(0, Pattern(5_000, 99)));
        Assert.That(e4!.Code, Is.EqualTo(ErrorCode.BrokerUnavailable), "a new staged awrite after the broker died");
    }

    // ---- Helpers ---------------------------------------------------------------------------------------------

    /// <summary>Linux reports /proc CPU times in USER_HZ, 100 per second on every architecture .NET runs on.</summary>
    private const int UserHz = 100;

    private static SharedStoreClient ConnectInProcess(BrokerProcess broker, Action<SharedStoreClientOptions>? configure = null)
    {
        var o = new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = Soon };
        configure?.Invoke(o);
        return SharedStoreClient.Connect(o);
    }

    /// <summary>A TestClient connected with the given connect options (e.g. "staging=1048576").</summary>
    private ClientProcess ConnectWithOptions(BrokerProcess broker, string name, string options)
    {
        var c = StartClient(name);
        c.Ok($"connect {broker.SocketPath} {options}");
        return c;
    }

    /// <summary>A TestClient that joined container c and object o.</summary>
    private ClientProcess JoinedClient(BrokerProcess broker, string name, string options = "")
    {
        var c = ConnectWithOptions(broker, name, options);
        c.Ok("join-container c");
        c.Ok("join-object o");
        return c;
    }

    private static byte[] Pattern(int length, ulong seed)
    {
        byte[] data = new byte[length];
        Payload.Fill(data, 0, seed);
        return data;
    }

    /// <summary>Awaits <paramref name="op"/> for at most <see cref="Soon"/>, rethrowing what the await throws.</summary>
    private static long Await(AsyncOperation op) => op.AsValueTask().AsTask().WaitAsync(Soon).GetAwaiter().GetResult();

    private static void AssertCanceledXorCompleted(AsyncOperation op, bool canceled, int length, string what)
    {
        if (canceled)
        {
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Canceled), $"{what}: opcancel won, so the operation must end Canceled");
            Assert.That(op.Result, Is.EqualTo(-(long)ErrorCode.Canceled), $"{what}: opreturn");
            Assert.That(op.Error, Is.EqualTo(ErrorCode.Canceled), what);
            Assert.Throws<OperationCanceledException>(() => Await(op), what);
        }
        else
        {
            Assert.That(op.Status, Is.EqualTo(AsyncStatus.Completed), $"{what}: opcancel lost, so the operation must end Completed");
            Assert.That(op.Result, Is.EqualTo(length), $"{what}: opreturn");
        }
    }

    private static void SpinMicroseconds(int us)
    {
        long until = Stopwatch.GetTimestamp() + (us * Stopwatch.Frequency / 1_000_000);
        while (Stopwatch.GetTimestamp() < until)
        {
            Thread.SpinWait(10);
        }
    }

    private static byte[] Read(SharedObject obj, long offset, int length)
    {
        using var lease = obj.Get(offset, length, Soon);
        return lease.ReadOnlySpan.ToArray();
    }

    private static void AssertContent(SharedObject obj, long offset, ReadOnlySpan<byte> expected, string what)
    {
        using var lease = obj.Get(offset, expected.Length, Soon);
        int same = lease.ReadOnlySpan.CommonPrefixLength(expected);
        if (same != expected.Length)
        {
            int end = same;
            while (end < expected.Length && lease.ReadOnlySpan[end] != expected[end])
            {
                end++;
            }

            Assert.Fail($"{what}: bytes [{offset + same}, {offset + end}) differ (first: {lease.ReadOnlySpan[same]} instead of {expected[same]})");
        }
    }

    /// <summary>Whether the broker's lock slot owns block <paramref name="block"/> of c/o (an applier took it, and is
    /// writing or waiting for readers to drain).</summary>
    private static bool BrokerOwnsBlock(SharedStoreClient client, long block)
    {
        var holders = client.Call(new Request { Holders = new HoldersRequest { ContainerName = "c", ObjectName = "o" } }, Soon, default).Response.Holders;
        return holders.Blocks.Any(b => (long)b.Block == block && b.Writer is { } w && w.Slot == BlockLockDescriptor.BrokerSlot(1));
    }

    private static List<int> MemberPids(SharedStoreClient client, string container) =>
        [.. client.ListRaw().Containers.Single(e => e.Info.Name == container).MemberPids];

    private static void AssertAWriteCompletes(ClientProcess client, string obj, long offset, ulong seed)
    {
        string id = client.Ok($"awrite {obj} {offset} 64 {seed}")[0];
        Assert.That(client.Ok($"await {id} 10000")[0], Is.EqualTo("Completed"), $"awrite of {obj} at {offset}");
    }

    /// <summary>CPU ticks of a process, every thread that ever ran in it included.</summary>
    private static long ProcessTicks(int pid) => ParseStat(File.ReadAllText($"/proc/{pid}/stat")).Ticks;

    /// <summary>CPU ticks per live thread of <paramref name="pid"/> (to name the busy one in a failure).</summary>
    private static Dictionary<int, (string Name, long Ticks)> ThreadTicks(int pid)
    {
        var result = new Dictionary<int, (string, long)>();
        foreach (string dir in Directory.GetDirectories($"/proc/{pid}/task"))
        {
            try
            {
                result[int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture)] = ParseStat(File.ReadAllText(Path.Combine(dir, "stat")));
            }
            catch (IOException)
            {
                // the thread ended between the listing and the read
            }
        }

        return result;
    }

    /// <summary>The name and utime + stime (fields 2, 14 and 15 of proc(5)) of a stat line; the name may hold spaces
    /// and parentheses, so the fields are counted from the last ')'.</summary>
    private static (string Name, long Ticks) ParseStat(string stat)
    {
        int close = stat.LastIndexOf(')');
        string name = stat[(stat.IndexOf('(', StringComparison.Ordinal) + 1)..close];
        string[] f = stat[(close + 2)..].Split(' ');
        return (name, long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture));
    }
}
