using System.Diagnostics;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using SharedStore.Broker;

namespace SharedStore.Integration.Tests;

/// <summary>Destroys on the owner followed by replicas (docs/ARCHITECTURE.md §14.2): an object's tombstone, an object
/// created again under its name with another size, and a container's tombstone.</summary>
public sealed partial class ReplicationTests
{
    /// <summary>Polls <paramref name="call"/> (with the fixture's <see cref="NatsClusterTest.Wait"/> as its bound) until
    /// it throws <paramref name="code"/>; any other outcome is a poll that found the old state.</summary>
    private static void WaitForError(ErrorCode code, Action call, string what)
    {
        var sw = Stopwatch.StartNew();
        string last = "no call made";
        while (sw.Elapsed < Wait)
        {
            try
            {
                call();
                last = "the call succeeded";
            }
            catch (SharedStoreException e) when (e.Code == code)
            {
                return;
            }
            catch (SharedStoreException e)
            {
                last = $"{e.Code}: {e.Message}";
            }

            Thread.Sleep(20); // a poll interval: the test observes the outcome, the sleep stands for nothing
        }

        Assert.Fail($"{what}: no {code} within {Wait.TotalSeconds} s (last: {last})");
    }

    /// <summary>A new replicated container <paramref name="name"/> on the owner with one object "o" of
    /// <paramref name="size"/> bytes of <paramref name="fill"/>, flushed, and a replica that has applied it.</summary>
    private static (Container Oc, SharedObject Oo, Container Rc, SharedObject Ro, byte[] Data) ReplicatedObject(
        SharedStoreClient owner, SharedStoreClient replica, string name, int size, byte fill)
    {
        var oc = owner.CreateContainer(name, SharedStoreClient.ProcessGroupId, Owner(4096));
        var oo = oc.CreateObject("o", size);
        var data = Enumerable.Repeat(fill, size).ToArray();
        oo.Write(0, data);
        oc.Flush(Wait);
        var rc = replica.CreateContainer(name, SharedStoreClient.ProcessGroupId, Replica());
        var ro = rc.WaitForObject("o", Wait);
        ro.WaitForVersion(oo.Version, Wait);
        return (oc, oo, rc, ro, data);
    }

    [Test]
    public void AnObjectDestroyedOnTheOwner_IsDestroyedOnAReplica_AndFreedAtItsLastLocalUse()
    {
        // Contract: the owner's destroy reaches a replica as a local destroy would: new joins are refused (Destroyed)
        // while a local member still has the object joined, and it keeps reading the last state (its memory is not
        // freed under it); at its leave the object is freed, and a join is NotFound. (Main before the tombstone: the
        // replica served the object forever.)
        var (ob, rb) = StartBrokers();
        string name = NewName("destroy");
        using var owner = Connect(ob);
        using var replica = Connect(rb);
        using var probe = Connect(rb);
        var (_, oo, _, ro, ones) = ReplicatedObject(owner, replica, name, 8192, 1);
        var pc = probe.JoinContainer(name);

        oo.Destroy(Wait);
        WaitForError(ErrorCode.Destroyed, () => pc.JoinObject("o").Leave(), "a join on the replica while a member uses the object");
        Assert.That(Read(ro), Is.EqualTo(ones), "the member that has it joined still reads the last state");
        ro.Leave();
        var e = Assert.Throws<SharedStoreException>(() => pc.JoinObject("o"))!;
        Assert.That(e.Code, Is.EqualTo(ErrorCode.NotFound), "freed at the last local use");
    }

    [Test]
    public void AnObjectDestroyedAndCreatedAgainWithAnotherSize_ReplacesTheOldOneOnAReplica()
    {
        // Contract: a new incarnation of a name (destroyed and created again on the owner, another size) replaces the
        // old one on a replica: a join by name gets the new size and, once its version is reached, the new data, never
        // a block of the old incarnation; a member that still has the old one joined keeps reading it until it leaves.
        // (Main before the tombstone: the replica kept the old object and dropped every message of the new one.)
        var (ob, rb) = StartBrokers();
        string name = NewName("recreate");
        using var owner = Connect(ob);
        using var replica = Connect(rb);
        var (oc, oo, rc, ro, old) = ReplicatedObject(owner, replica, name, 3 * 4096, 0x11);

        oo.Destroy(Wait);
        var fresh = new byte[(5 * 4096) + 100];
        new Random(18).NextBytes(fresh);
        var no = oc.CreateObject("o", fresh.Length);
        no.Write(0, fresh);
        oc.Flush(Wait);
        long v = no.Version;

        SharedObject? got = null;
        var sw = Stopwatch.StartNew();
        while (got is null && sw.Elapsed < Wait)
        {
            try
            {
                var j = rc.JoinObject("o");
                if (j.Size == fresh.Length)
                {
                    got = j;
                    break;
                }

                j.Leave();
            }
            catch (SharedStoreException e) when (e.Code is ErrorCode.Destroyed or ErrorCode.NotFound)
            {
                // between the two incarnations
            }

            Thread.Sleep(20); // a poll interval
        }

        Assert.That(got, Is.Not.Null, $"the replica's 'o' did not become the new incarnation of {fresh.Length} bytes within {Wait.TotalSeconds} s");
        got!.WaitForVersion(v, Wait);
        Assert.That(Read(got), Is.EqualTo(fresh), "the new incarnation's data");
        Assert.That(Read(ro), Is.EqualTo(old), "the old incarnation, still joined, is untouched");
        ro.Leave();
        got.Leave();
    }

    [Test]
    public async Task AContainerDestroyedOnTheOwner_GoesAwayOnAReplica_WhenItsLastMemberLeaves()
    {
        // Contract: the owner's container destroy reaches a replica as a local destroy would: joins are refused
        // (Destroyed) while members remain, who keep reading; when the last one leaves the container is freed and a
        // join is NotFound. The stream then holds the container's tombstone alone (the purge below its sequence keeps
        // it for replicas that have not read it: nats-server 2.9 honours a purge's filter with a sequence). (Main
        // before the tombstone: the replica container stayed, joinable, forever.)
        var (ob, rb) = StartBrokers();
        string name = NewName("cdestroy");
        using var owner = Connect(ob);
        using var replica = Connect(rb);
        using var probe = Connect(rb);
        var (oc, _, rc, ro, twos) = ReplicatedObject(owner, replica, name, 4096, 2);

        oc.Destroy(Wait);
        WaitForError(ErrorCode.Destroyed, () => probe.JoinContainer(name).Leave(), "a container join on the replica while a member remains");
        Assert.That(Read(ro), Is.EqualTo(twos), "the remaining member still reads");
        ro.Leave();
        rc.Leave();
        var e = Assert.Throws<SharedStoreException>(() => probe.JoinContainer(name))!;
        Assert.That(e.Code, Is.EqualTo(ErrorCode.NotFound), "freed when its last member left");

        await using var nats = new NatsConnection(new NatsOpts { Url = Cluster.Urls });
        var js = new NatsJSContext(nats);
        string tombstone = ReplicationNames.ContainerTombstoneSubject(ReplicationNames.DefaultStream, name);
        var filter = new StreamInfoRequest { SubjectsFilter = ReplicationNames.ContainerSubjects(ReplicationNames.DefaultStream, name) };
        var sw = Stopwatch.StartNew();
        IDictionary<string, long> left;
        while (true)
        {
            var stream = await js.GetStreamAsync(ReplicationNames.DefaultStream, filter);
            left = stream.Info.State.Subjects ?? new Dictionary<string, long>();
            if ((left.Count == 1 && left.ContainsKey(tombstone)) || sw.Elapsed >= Wait)
            {
                break;
            }

            await Task.Delay(20); // a poll interval
        }

        Assert.That(left.Keys, Is.EquivalentTo(new[] { tombstone }), "the purge (in the background after the tombstone) leaves the tombstone alone");
    }
}
