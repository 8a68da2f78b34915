namespace SharedStore.Broker;

/// <summary>
/// The broker's fault-injection seam, for tests only. The shipped broker reads no test variable from its environment:
/// these properties stay 0 unless <c>tests/SharedStore.TestHooks</c> sets them. That assembly is a .NET startup hook
/// (it runs before <c>Main</c>) which the test harness loads, through <c>DOTNET_STARTUP_HOOKS</c>, into a broker it
/// starts with <c>SHAREDSTORE_TEST_*</c> variables; it is built only with the tests and never ships beside the broker.
/// </summary>
internal static class BrokerTestHooks
{
    /// <summary>SO_SNDBUF of every session when &gt; 0 (ClientSession.TestHooks.cs).</summary>
    internal static int SendBufferBytes { get; set; }

    /// <summary>Milliseconds between a write-back batch's slot headers and slot data when &gt; 0
    /// (DurableStore.TestHooks.cs).</summary>
    internal static int TearWindowMs { get; set; }
}
