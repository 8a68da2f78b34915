using System.Diagnostics;
using SharedStore.Protocol;

namespace SharedStore.Integration.Tests.Harness;

/// <summary>
/// Base of the cross-process fixtures: every broker and client a test starts is registered here and killed in
/// teardown, pass or fail, and the running test is announced on the progress stream so a hang can be diagnosed.
/// </summary>
[Category("CrossProcess")]
[NonParallelizable]
public abstract class CrossProcessTest
{
    private readonly List<IDisposable> _children = [];

    [SetUp]
    public void AnnounceTest() => TestContext.Progress.WriteLine($"[{DateTime.UtcNow:HH:mm:ss.fff}] start {TestContext.CurrentContext.Test.FullName}");

    [TearDown]
    public void KillChildren()
    {
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            try
            {
                _children[i].Dispose();
            }
            catch (Exception e) when (e is InvalidOperationException or IOException)
            {
                TestContext.Progress.WriteLine($"teardown: {e.Message}");
            }
        }

        _children.Clear();
        TestContext.Progress.WriteLine($"[{DateTime.UtcNow:HH:mm:ss.fff}] end {TestContext.CurrentContext.Test.Name}: {TestContext.CurrentContext.Result.Outcome}");
    }

    internal BrokerProcess StartBroker(params string[] args) => Track(BrokerProcess.Start(args));

    internal BrokerProcess StartBroker(IDictionary<string, string> env, params string[] args) => Track(BrokerProcess.Start(env, args));

    internal ClientProcess StartClient(string name, bool asNobody = false) => Track(ClientProcess.Start(name, asNobody));

    /// <summary>What the tests with a real second user start from: a --system broker (running as root, like the tests)
    /// and two connected clients, one as root and one as the user nobody (uid/gid 65534, no supplementary groups).
    /// Ignores the test where this machine cannot run a process as another user.</summary>
    internal (BrokerProcess Broker, ClientProcess Root, ClientProcess Nobody) StartSystemBrokerWithNobody(string rootName = "root", string nobodyName = "nobody")
    {
        if (!ClientProcess.CanRunAsNobody(out string why))
        {
            Assert.Ignore($"this test needs a second user: {why}");
        }

        var broker = StartBroker("--system");
        return (broker, Connect(broker, rootName), Connect(broker, nobodyName, asNobody: true));
    }

    /// <summary>A client connected to <paramref name="broker"/>.</summary>
    internal ClientProcess Connect(BrokerProcess broker, string name, bool asNobody = false)
    {
        var c = StartClient(name, asNobody);
        c.Ok($"connect {broker.SocketPath}");
        return c;
    }

    /// <summary>A client library in this test process, connected to <paramref name="broker"/> (requests time out after
    /// 10 s).</summary>
    internal static SharedStoreClient ConnectInProcess(BrokerProcess broker) =>
        SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(10) });

    /// <summary>The broker's list entry of container <paramref name="name"/>.</summary>
    internal static ContainerEntry Entry(SharedStoreClient client, string name) =>
        client.ListRaw().Containers.Single(c => c.Info.Name == name);

    /// <summary>Waits until process <paramref name="pid"/> waits for the write lock of block <paramref name="block"/>:
    /// the broker's <c>holders</c>, read from the lock record, shows it as the block's owner waiting for readers to drain,
    /// or among the slots waiting to own the block. <see cref="ClientProcess.ExpectNoAnswerYet"/> only says that a write
    /// has not answered yet; this says that it got as far as the lock, so what the test does next meets a waiting
    /// writer.</summary>
    internal static void WaitUntilWriterWaits(BrokerProcess broker, string container, string obj, long block, int pid)
    {
        using var observer = ConnectInProcess(broker);
        WaitUntil(() =>
        {
            var reply = observer.Call(new Request { Holders = new HoldersRequest { ContainerName = container, ObjectName = obj } }, ClientProcess.Soon, default).Response.Holders;
            return reply.Blocks.Any(b => (long)b.Block == block
                && ((b.Writer is { Active: false } w && w.Pid == pid) || b.Waiting.Any(h => h.Pid == pid)));
        }, $"pid {pid} to wait for the write lock of block {block} of {container}/{obj}");
    }

    /// <summary>Polls <paramref name="condition"/> every 20 ms; fails the test after <see cref="ClientProcess.Soon"/>.</summary>
    internal static void WaitUntil(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > ClientProcess.Soon)
            {
                Assert.Fail($"timed out after {ClientProcess.Soon}: {what}");
            }

            Thread.Sleep(20);
        }
    }

    internal T Track<T>(T child) where T : IDisposable
    {
        _children.Add(child);
        return child;
    }
}
