using SharedStore.Queues;

namespace SharedStore.Async;

/// <summary>Test-only view of the producer (used by the TestClient's <c>claim-no-publish</c>).</summary>
internal sealed partial class ChannelProducer
{
    /// <summary>Claims a slot and writes a whole write message into it, but neither commits nor publishes, as a
    /// producer killed between claim and commit leaves it. The submission lock stays held: the process is about to be
    /// killed.</summary>
    internal void TestClaimWithoutPublish(ChannelTarget target, long offset, ReadOnlySpan<byte> data)
    {
        _lock.Enter(); // never exited: the process is about to be killed
        if (data.Length > InlineMax || !ClaimSlot(SpaceWait.Forever, out Span<byte> slot))
        {
            throw new InvalidOperationException("the test hook writes one inline message");
        }

        data.CopyTo(WriteMessage(slot, ChannelMessage.KindWrite, ChannelMessage.FlagWhole, target, data.Length, offset, stagingOffset: 0, data.Length));
    }
}
