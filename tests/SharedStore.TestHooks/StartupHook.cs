using System.Globalization;
using SharedStore.Broker;

/// <summary>
/// The .NET startup hook (the runtime calls <c>StartupHook.Initialize</c>, a type of that name in no namespace, before
/// the broker's <c>Main</c>). It turns the test variables into the broker's <see cref="BrokerTestHooks"/>:
/// <list type="bullet">
/// <item>SHAREDSTORE_TEST_SEND_BUFFER_BYTES=N: every session's SO_SNDBUF is N (LargeReplyTests).</item>
/// <item>SHAREDSTORE_TEST_TEAR_WINDOW_MS=N: write-back writes slot headers and slot data N ms apart (DurableTests,
/// DurableCrashTests).</item>
/// </list>
/// </summary>
internal static class StartupHook
{
    public static void Initialize()
    {
        BrokerTestHooks.SendBufferBytes = Positive("SHAREDSTORE_TEST_SEND_BUFFER_BYTES");
        BrokerTestHooks.TearWindowMs = Positive("SHAREDSTORE_TEST_TEAR_WINDOW_MS");
    }

    private static int Positive(string variable) =>
        int.TryParse(Environment.GetEnvironmentVariable(variable), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0 ? n : 0;
}
