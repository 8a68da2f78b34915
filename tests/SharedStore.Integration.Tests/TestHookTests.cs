namespace SharedStore.Integration.Tests;

/// <summary>
/// Test hooks exist only in test builds (issue 14, item 4): the broker as it ships reads no SHAREDSTORE_TEST_*
/// variable; only the test startup hook (tests/SharedStore.TestHooks) does. Seen failing on the old code, where
/// ClientSession read SHAREDSTORE_TEST_SEND_BUFFER_BYTES itself: the list below failed with NoResources.
/// </summary>
public sealed class TestHookTests : CrossProcessTest
{
    [Test]
    public void ShippedBroker_IgnoresTestVariables()
    {
        // Contract: with the test variable set but no startup hook (DOTNET_STARTUP_HOOKS empty, as in any deployment),
        // the send buffer stays the kernel's default and a reply of about 60 KB goes through.
        using var broker = StartBroker(new Dictionary<string, string> { ["SHAREDSTORE_TEST_SEND_BUFFER_BYTES"] = "8192", ["DOTNET_STARTUP_HOOKS"] = "" });
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath, RequestTimeout = TimeSpan.FromSeconds(20) });
        using var con = client.CreateContainer("many", SharedStoreClient.ProcessGroupId);
        for (int i = 0; i < 2000; i++)
        {
            con.CreateObject($"object-number-{i}", 64).Dispose();
        }

        Assert.That(client.ListContainers().Single().Objects, Has.Count.EqualTo(2000));
    }
}
