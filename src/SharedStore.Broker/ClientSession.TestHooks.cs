using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Fault injection for the reply tests (tests/SharedStore.Integration.Tests/LargeReplyTests.cs).</summary>
internal sealed partial class ClientSession
{
    /// <summary>
    /// SHAREDSTORE_TEST_SEND_BUFFER_BYTES: never set in production. Replies are split into parts small enough for any
    /// stock send buffer (<see cref="ResponseFraming.PartBytes"/>), so no reply of a healthy broker is refused by the
    /// kernel, and a test could not see what happens when one is. With N &gt; 0 every session's SO_SNDBUF is set to N
    /// (the kernel doubles it), as on a host whose memory for socket buffers is short: a reply part larger than that
    /// fails with EMSGSIZE, and the client must be told.
    /// </summary>
    private static readonly int s_testSendBufferBytes =
        int.TryParse(Environment.GetEnvironmentVariable("SHAREDSTORE_TEST_SEND_BUFFER_BYTES"), out int n) && n > 0 ? n : 0;

    private static void ApplySendBufferTestHook(SeqPacketSocket socket)
    {
        if (s_testSendBufferBytes > 0)
        {
            socket.SetSendBuffer(s_testSendBufferBytes);
        }
    }
}
