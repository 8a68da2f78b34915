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

    internal T Track<T>(T child) where T : IDisposable
    {
        _children.Add(child);
        return child;
    }
}
