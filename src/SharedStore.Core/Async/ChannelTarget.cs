namespace SharedStore.Async;

/// <summary>The object a channel message names: the broker's container and object ids (the submitter's membership is
/// checked by the broker when it applies the message). The channel takes this, not a <c>SharedObject</c>, so the
/// asynchronous layer does not depend on the client layer that calls it (docs/ARCHITECTURE.md §9.8).</summary>
/// <param name="ContainerId">The broker's container id.</param>
/// <param name="ObjectId">The broker's object id within it.</param>
internal readonly record struct ChannelTarget(uint ContainerId, uint ObjectId);

/// <summary>What a submission does when the ring or the staging area is full: fail at once (an operation already
/// Failed with Busy; <see cref="AsyncFullMode.Fail"/>), or wait up to <see cref="Timeout"/> and then throw Timeout with
/// nothing submitted. Passed per call because the client reads its options per call.</summary>
/// <param name="FailWhenFull">Return a refused operation instead of waiting.</param>
/// <param name="Timeout">How long to wait for space; <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> for ever.</param>
internal readonly record struct SpaceWait(bool FailWhenFull, TimeSpan Timeout)
{
    /// <summary>Never refused, never timed out: the continuation chunks of a chunked write whose first chunk is in the
    /// ring (the broker holds the range's locks until the last one, so the rest must follow however long it takes).</summary>
    public static SpaceWait Forever => new(false, System.Threading.Timeout.InfiniteTimeSpan);

    /// <summary>Waits up to <paramref name="timeout"/>.</summary>
    public static SpaceWait Wait(TimeSpan timeout) => new(false, timeout);

    /// <summary>Refused at once when full (<c>TryAWrite</c>).</summary>
    public static SpaceWait FailAtOnce => new(true, TimeSpan.Zero);
}
