using System.Diagnostics;
using SharedStore.TestClient;

namespace SharedStore.Integration.Tests;

/// <summary>
/// The calls that first wait for this process's own pending asynchronous operations (flush, leave, destroy; issue 14,
/// item 4): a drain that times out fails the call with Timeout, within the call's timeout, and asks the broker
/// nothing; a drain that took part of the timeout leaves the broker only the rest. Each test holds one of this
/// process's awrites pending: it goes to block 0 of c/o, which a reader in another process leases, and the broker's
/// applier is seen waiting for that block before the call under test starts. Before these fixes the drain's result
/// was dropped: Flush went ahead and succeeded, and Leave and Destroy were sent anyway (the broker then waited for the
/// write too, and performed the leave or destroy once it landed, after the call had reported Timeout).
/// </summary>
public sealed partial class AsyncTests
{
    /// <summary>The budget of the calls under test.</summary>
    private static readonly TimeSpan ShortTimeout = TimeSpan.FromSeconds(1);

    /// <summary>How far past its timeout a timed-out call may return: scheduling on a loaded 2-vCPU machine. The old
    /// behaviour took the timeout twice plus the broker's 5 s grace for destroys.</summary>
    private static readonly TimeSpan Slack = TimeSpan.FromSeconds(2);

    [Test]
    public void Flush_OwnAsyncWriteStillPending_FailsWithTimeoutWithinItsTimeout()
    {
        // Contract: container_flush waits for this process's pending asynchronous writes first; when that wait times
        // out, Flush throws Timeout within its timeout (before, it went ahead and returned as if everything submitted
        // before it were on disk). Once the write completed, the same Flush succeeds.
        using var broker = StartBroker();
        string store = Path.Combine(broker.Directory, "store");
        Directory.CreateDirectory(store);
        using var client = ConnectInProcess(broker);
        var durable = client.CreateContainer("dur", Gid, new ContainerOptions { DurablePath = store });
        durable.CreateObject("d", 4096).Write(0, Pattern(4096, 2));
        var pending = SubmitBlockedWrite(broker, client, out var reader, out string lease);

        AssertTimeoutWithin(ShortTimeout, () => durable.Flush(ShortTimeout));
        Assert.That(pending.Status, Is.EqualTo(AsyncStatus.InProgress));

        Land(pending, reader, lease);
        durable.Flush(Soon);
    }

    [Test]
    public void ContainerDestroy_OwnAsyncWriteStillPending_FailsWithTimeoutAndDestroysNothing()
    {
        // Contract: container_destroy waits for this process's pending asynchronous writes first; when that wait times
        // out, Destroy throws Timeout within its timeout and the container is untouched: once the write completed,
        // this handle still creates objects in it, and the destroy then succeeds. (Before: the destroy was sent after
        // the timed-out drain, the broker held it until the write landed, up to 30 s, so the call took its timeout
        // twice plus 5 s before it threw, and the container was destroyed afterwards all the same.)
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var a = client.CreateContainer("a", Gid);
        var pending = SubmitBlockedWrite(broker, client, out var reader, out string lease);

        AssertTimeoutWithin(ShortTimeout, () => a.Destroy(ShortTimeout));

        Land(pending, reader, lease);
        Assert.DoesNotThrow(() => a.CreateObject("after", 4096), "the container must still exist, with this handle a member");
        a.Destroy(Soon);
    }

    [Test]
    public void ContainerDestroy_DrainTookPartOfTheTimeout_TheBrokerWaitGetsOnlyTheRest()
    {
        // Contract: one timeout covers the drain and the broker's wait for other members. Here the drain takes about
        // half of a 6 s timeout (the reader releases its lease after 3 s, so the pending write lands), and the broker
        // then waits for the reader, which stays a member: Destroy throws Timeout after about 6 s in all, not 3 + 6 s.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var pending = SubmitBlockedWrite(broker, client, out var c, out var reader, out string lease);
        var timeout = TimeSpan.FromSeconds(6);

        var sw = Stopwatch.StartNew();
        var destroy = Task.Run(() => c.Destroy(timeout));
        Thread.Sleep(timeout / 2); // part of the budget goes by in the drain
        Assert.That(destroy.IsCompleted, Is.False, "the drain waits for the pending write");
        Land(pending, reader, lease);

        var e = Assert.ThrowsAsync<SharedStoreException>(async () => await destroy.WaitAsync(Soon));
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.Timeout), e.Message);
        Assert.That(sw.Elapsed, Is.LessThan(timeout + (timeout / 4)), "the broker was given the whole timeout again");
        Assert.DoesNotThrow(() => c.CreateObject("after", 4096), "the container was put back");
    }

    [Test]
    public void ObjectDestroy_OwnAsyncWriteStillPending_FailsWithTimeoutAndDestroysNothing()
    {
        // Contract: object_destroy waits for this process's pending asynchronous writes first; when that wait times
        // out, Destroy throws Timeout within its timeout and the object is untouched: once the write completed it can
        // still be joined by name, and the destroy then succeeds.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker);
        var a = client.CreateContainer("a", Gid);
        var y = a.CreateObject("y", 4096);
        var pending = SubmitBlockedWrite(broker, client, out var reader, out string lease);

        AssertTimeoutWithin(ShortTimeout, () => y.Destroy(ShortTimeout));

        Land(pending, reader, lease);
        Assert.DoesNotThrow(() => a.JoinObject("y").Leave(), "the object must still exist");
        y.Destroy(Soon);
    }

    [Test]
    public void ContainerLeave_OwnAsyncWriteStillPending_FailsWithTimeoutAndStaysAMember()
    {
        // Contract: container_leave waits (up to RequestTimeout) for this process's pending asynchronous writes, so
        // they land while it is a member; when that wait times out, Leave throws Timeout, the handle stays open and
        // the membership stays, and a later Leave (or Dispose) leaves. (Before: the leave was sent anyway; the broker
        // held it until the write landed, and left after the call had thrown, behind the handle's back.)
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.RequestTimeout = ShortTimeout);
        var a = client.CreateContainer("a", Gid);
        var pending = SubmitBlockedWrite(broker, client, out var reader, out string lease);

        AssertTimeoutWithin(ShortTimeout, a.Leave);

        Land(pending, reader, lease);
        Assert.DoesNotThrow(() => a.CreateObject("after", 4096), "still a member");
        a.Leave();
        Assert.Throws<ObjectDisposedException>(() => a.CreateObject("later", 4096));
    }

    [Test]
    public void ObjectLeave_OwnAsyncWriteStillPending_FailsWithTimeoutAndStaysJoined()
    {
        // Contract: object_leave waits (up to RequestTimeout) for this process's pending asynchronous writes; when that
        // wait times out, Leave throws Timeout and this process still uses the object: another member's destroy of it
        // waits for this process (and times out), until a later Leave leaves.
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o => o.RequestTimeout = ShortTimeout);
        var a = client.CreateContainer("a", Gid);
        var y = a.CreateObject("y", 4096);
        var other = ConnectWithOptions(broker, "other", "");
        other.Ok("join-container a");
        other.Ok("join-object y");
        var pending = SubmitBlockedWrite(broker, client, out var reader, out string lease);

        AssertTimeoutWithin(ShortTimeout, y.Leave);

        Land(pending, reader, lease);
        _ = client.ListRaw(); // a round trip: the broker has handled everything this process sent before
        other.Err("destroy-object y 300", "Timeout");
        y.Leave();
        other.Ok("destroy-object y 5000");
    }

    [Test]
    public void ARead_BrokerPathRingFull_FailMode_RefusedWithBusyAtOnce()
    {
        // Contract: with AsyncFullMode.Fail a broker-path aread that finds the ring full returns an operation that is
        // already Failed with Busy, as an awrite does, and frees its staging: once the ring drained, the next aread
        // reads. (It used to return an operation bound to ring position -1: InProgress, then another op's status.)
        using var broker = StartBroker();
        using var client = ConnectInProcess(broker, o =>
        {
            o.AsyncRingSlots = 64;
            o.AsyncStagingBytes = MiB;
            o.AsyncFullMode = AsyncFullMode.Fail;
            o.AsyncReadPath = AsyncReadPath.Broker;
        });
        var c = client.CreateContainer("c", Gid);
        var obj = c.CreateObject("o", MiB);
        var reader = JoinedClient(broker, "reader");
        string lease = reader.Ok("get o 0 4096 5000")[0];

        var accepted = new List<AsyncOperation>();
        while (obj.TryAWrite(accepted.Count * 64L, Pattern(64, 7), out var op))
        {
            accepted.Add(op);
            Assert.That(accepted, Has.Count.LessThanOrEqualTo(64), "more submissions accepted than the ring holds");
        }

        var refused = obj.ARead(0, new byte[4096]);
        Assert.That(refused.Status, Is.EqualTo(AsyncStatus.Failed));
        Assert.That(refused.Error, Is.EqualTo(ErrorCode.Busy));
        Assert.That(refused.Result, Is.EqualTo(-(long)ErrorCode.Busy));

        reader.Ok($"put {lease}");
        foreach (var op in accepted)
        {
            Assert.That(Await(op), Is.EqualTo(64));
        }

        byte[] buffer = new byte[4096];
        Assert.That(Await(obj.ARead(0, buffer)), Is.EqualTo(4096));
        Assert.That(buffer.AsSpan(0, 64).SequenceEqual(Pattern(64, 7)), Is.True, "the broker-path read after the refusal reads");
    }

    /// <summary>Runs <paramref name="call"/>, which must throw Timeout within <paramref name="timeout"/> (plus
    /// <see cref="Slack"/>): one budget for the drain and the broker call, and no broker call after a timed-out
    /// drain.</summary>
    private static void AssertTimeoutWithin(TimeSpan timeout, TestDelegate call)
    {
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<SharedStoreException>(call);
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.Timeout), e.Message);
        Assert.That(sw.Elapsed, Is.LessThan(timeout + Slack), "one budget for the drain and the broker call");
    }

    /// <summary>The reader puts its lease on block 0: the write SubmitBlockedWrite held pending lands.</summary>
    private static void Land(AsyncOperation pending, ClientProcess reader, string lease)
    {
        reader.Ok($"put {lease}");
        Assert.That(Await(pending), Is.EqualTo(64));
    }

    /// <summary>Creates c/o, has a reader process lease block 0, submits one 64-byte awrite of this client there and
    /// waits until the broker's applier is seen waiting for that block: the write stays pending until the lease is
    /// put.</summary>
    private AsyncOperation SubmitBlockedWrite(BrokerProcess broker, SharedStoreClient client, out ClientProcess reader, out string lease) =>
        SubmitBlockedWrite(broker, client, out _, out reader, out lease);

    /// <inheritdoc cref="SubmitBlockedWrite(BrokerProcess, SharedStoreClient, out ClientProcess, out string)"/>
    private AsyncOperation SubmitBlockedWrite(BrokerProcess broker, SharedStoreClient client, out Container c, out ClientProcess reader, out string lease)
    {
        c = client.CreateContainer("c", Gid);
        var o = c.CreateObject("o", MiB);
        reader = JoinedClient(broker, "reader");
        lease = reader.Ok("get o 0 4096 5000")[0];
        var pending = o.AWrite(0, Pattern(64, 1));
        WaitUntil(() => BrokerOwnsBlock(client, 0), "the applier waits for the reader's block 0");
        Assert.That(pending.Status, Is.EqualTo(AsyncStatus.InProgress));
        return pending;
    }
}
