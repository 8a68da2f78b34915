using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Fault injection for the reply tests (tests/SharedStore.Integration.Tests/LargeReplyTests.cs).</summary>
internal sealed partial class ClientSession
{
    /// <summary>
    /// SHAREDSTORE_TEST_SEND_BUFFER_BYTES, read only by the test startup hook (<see cref="BrokerTestHooks"/>). Replies are split into parts small enough for any
    /// stock send buffer (<see cref="ResponseFraming.PartBytes"/>), so no reply of a healthy broker is refused by the
    /// kernel, and a test could not see what happens when one is. With N &gt; 0 every session's SO_SNDBUF is set to N
    /// (the kernel doubles it), as on a host whose memory for socket buffers is short: a reply part larger than that
    /// fails with EMSGSIZE, and the client must be told.
    /// </summary>
    private static void ApplySendBufferTestHook(SeqPacketSocket socket)
    {
        if (BrokerTestHooks.SendBufferBytes > 0)
        {
            socket.SetSendBuffer(BrokerTestHooks.SendBufferBytes);
        }
    }
}
