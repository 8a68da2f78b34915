namespace SharedStore.Async;

/// <summary>
/// object_aread on the broker path (<see cref="AsyncReadPath.Broker"/>): one read message in the ring, for which the
/// broker copies the object's range into a Held staging range under the blocks' read locks. The completion thread
/// finishes it: once the message's status word is terminal (the broker stored it, release, after its copy), it copies
/// the range out into the caller's buffer and frees the range; the operation's own state lives in managed memory.
/// </summary>
internal sealed class BrokerReadOperation(OpStatusTable status, StagingAllocator staging, long position, StagingRange range, Memory<byte> buffer) : ClientOperation, ICompletionWaiter
{
    public override long Id => position;

    public bool IsDone => status.StatusOf(position, position).Status != AsyncStatus.InProgress;

    public override bool Cancel()
    {
        bool canceled = status.Cancel(position);
        if (canceled)
        {
            status.Nudge(); // the completion thread finishes it now rather than at its next slice
        }

        return canceled;
    }

    public unsafe bool TryComplete()
    {
        var (s, result) = status.StatusOf(position, position);
        if (s == AsyncStatus.InProgress)
        {
            return false;
        }

        if (s == AsyncStatus.Completed)
        {
            new ReadOnlySpan<byte>(staging.PointerOf(range), (int)result).CopyTo(buffer.Span);
        }

        StagingAllocator.Free(range);
        Finish(s, result);
        return true;
    }

    public void Abandon() => Finish(AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
}
