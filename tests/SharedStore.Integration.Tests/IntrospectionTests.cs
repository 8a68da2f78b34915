using System.Reflection;
using System.Runtime.CompilerServices;

namespace SharedStore.Integration.Tests;

/// <summary>
/// The operator calls are public API (issue 14, item 4: the shipped sharedstore tool called the internal
/// <c>client.Call</c> through InternalsVisibleTo). Seen failing on the old code: ListContainers, Holders and Status did
/// not exist (the test did not compile), and SharedStore.Core granted InternalsVisibleTo to "sharedstore".
/// </summary>
public sealed class IntrospectionTests : CrossProcessTest
{
    [Test]
    public void ListHoldersStatus_TypedSnapshotsOfTheBroker()
    {
        using var broker = StartBroker();
        var reader = Connect(broker, "reader");
        reader.Ok($"create-container seen {SharedStoreClient.ProcessGroupId} 4096");
        reader.Ok("create-object o 16384");
        string lease = reader.Ok("get o 4096 4096 10000")[0]; // block 1 read-held by the reader

        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(20) });
        var c = client.ListContainers().Single();
        Assert.That((c.Name, c.GroupId, c.BlockSize, c.WritePolicy, c.DurablePath), Is.EqualTo(("seen", SharedStoreClient.ProcessGroupId, 4096u, WritePolicy.AllMembers, (string?)null)));
        Assert.That(c.MemberPids, Is.EqualTo(new[] { reader.Pid }));
        var o = c.Objects.Single();
        Assert.That((o.Name, o.Size, o.BlockCount, o.UseCount), Is.EqualTo(("o", 16384L, 4u, 1u)));

        var h = client.Holders("seen", "o");
        Assert.That((h.BlockSize, h.BlockCount), Is.EqualTo((4096u, 4L)));
        var b = h.Blocks.Single();
        Assert.That(b.Block, Is.EqualTo(1));
        Assert.That(b.Readers.Single().Pid, Is.EqualTo(reader.Pid));
        Assert.That(b.Readers.Single().Count, Is.EqualTo(1u));
        Assert.That(b.Writer, Is.Null);
        Assert.That(b.Waiting, Is.Empty);

        var s = client.Status();
        Assert.That(s.BrokerPid, Is.EqualTo(client.BrokerPid));
        Assert.That((s.ContainerCount, s.ObjectCount, s.ObjectBytes), Is.EqualTo((1, 1, 16384L)));
        Assert.That(s.SocketPath, Is.EqualTo(broker.SocketPath));
        Assert.That(s.Uptime, Is.GreaterThan(TimeSpan.Zero));

        Assert.That(Assert.Throws<SharedStoreException>(() => client.Holders("seen", "missing"))!.Code, Is.EqualTo(ErrorCode.NotFound));
        Assert.That(Assert.Throws<SharedStoreException>(() => client.Holders("missing", "o"))!.Code, Is.EqualTo(ErrorCode.NotFound));
        reader.Ok($"put {lease}");
    }

    [Test]
    public void Core_GrantsNoInternalsToTheShippedTool()
    {
        var granted = typeof(SharedStoreClient).Assembly.GetCustomAttributes<InternalsVisibleToAttribute>().Select(a => a.AssemblyName).ToArray();
        Assert.That(granted, Does.Not.Contain("sharedstore"), "the sharedstore tool ships: it must use the public API");
    }
}
