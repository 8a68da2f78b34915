using SharedStore.Tests.Nats;

namespace SharedStore.Integration.Tests.Harness;

/// <summary>A test class whose tests share one JetStream cluster of real nats-server processes
/// (<see cref="NatsCluster"/>), started before the first test and stopped by pid after the last; the class is ignored
/// where nats-server is not installed.</summary>
public abstract class NatsClusterTest : CrossProcessTest
{
    /// <summary>The bound of every wait on replication in these tests.</summary>
    protected static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private NatsCluster? _cluster;

    private protected NatsCluster Cluster => _cluster ?? throw new InvalidOperationException("no cluster");

    /// <summary>The cluster's options (the defaults: three nodes).</summary>
    private protected virtual NatsClusterOptions ClusterOptions => new();

    [OneTimeSetUp]
    public void StartCluster()
    {
        if (!File.Exists(NatsCluster.ServerPath))
        {
            Assert.Ignore($"nats-server is not installed at {NatsCluster.ServerPath} (tools/setup.sh installs it)");
        }

        _cluster = NatsCluster.Start(ClusterOptions);
    }

    [OneTimeTearDown]
    public void StopCluster() => _cluster?.Dispose();
}
