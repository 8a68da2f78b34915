using SharedStore.Locks;
using SharedStore.Queues;

namespace SharedStore.Async;

/// <summary>
/// This process's end of its asynchronous channel (layout: <see cref="ChannelDescriptor"/>; docs/ARCHITECTURE.md §9):
/// one per broker connection, opened on the first asynchronous call. It maps the channel, builds its four parts and
/// owns their lifetime; the work is theirs:
/// <list type="bullet">
/// <item><see cref="ChannelProducer"/>: every submission, through the SPSC ring, under the submission lock.</item>
/// <item><see cref="StagingAllocator"/>: the staging area, allocated and freed in order (under that lock).</item>
/// <item><see cref="OpStatusTable"/>: opstatus, opcancel, opreturn and every wait for completions, read from the
/// status entries and the completion word without a round trip.</item>
/// <item><see cref="CompletionReaper"/>: the completion thread that finishes awaited operations and broker reads.</item>
/// </list>
/// <para><b>Lock order</b>: the submission lock, then the completion thread's monitor (a broker read registers under
/// the submission lock), then a <see cref="ClientOperation"/>'s own gate. Nothing takes them the other way round.</para>
/// <para><b>Dependencies</b>: this layer knows broker ids (<see cref="ChannelTarget"/>), the connection's
/// <see cref="LockWaitPolicy"/> (its BrokerLost flag) and the layouts; it never calls the client layer (Client/), which
/// calls it.</para>
/// </summary>
internal sealed unsafe class AsyncChannel : IDisposable
{
    private readonly ChannelRegion _region;
    private readonly StagingAllocator _staging;
    private readonly ChannelProducer _producer;

    /// <summary>Maps the channel memfd <paramref name="fd"/> the broker sent in answer to async_open.</summary>
    /// <param name="fd">The memfd (the mapping keeps the memory; the caller closes it).</param>
    /// <param name="length">Its length.</param>
    /// <param name="connection">The connection's lock-wait policy: its BrokerLost flag and spin budget.</param>
    /// <exception cref="SharedStoreException">VersionMismatch; Internal (a layout outside the memfd).</exception>
    public AsyncChannel(SafeFd fd, long length, LockWaitPolicy connection)
    {
        _region = ChannelRegion.Map(fd, length, connection);
        try
        {
            Status = new OpStatusTable(_region);
            _staging = new StagingAllocator(_region, Status);
            Completions = new CompletionReaper(_region, Status);
            _producer = new ChannelProducer(this, _region, _staging, Status, Completions);
        }
        catch
        {
            _region.Unmap(); // a ring with a foreign magic or version
            throw;
        }

        SlotCount = _region.Header->SlotCount;
        _region.PopulateHot();
    }

    /// <summary>Ring slots (and status entries).</summary>
    public int SlotCount { get; }

    /// <summary>Largest write carried inside its ring slot.</summary>
    public int InlineMax => _producer.InlineMax;

    /// <summary>Largest staged piece; larger writes go in chunks.</summary>
    public long MaxChunk => _staging.MaxChunk;

    /// <summary>Staging bytes.</summary>
    public long StagingSize => _staging.Size;

    /// <summary>Status, cancel and waits of the ring operations this channel returned (<see cref="AsyncOperation"/>).</summary>
    internal OpStatusTable Status { get; }

    /// <summary>The completion thread (awaiting a ring operation).</summary>
    internal CompletionReaper Completions { get; }

    // ---- Submission (ChannelProducer) ---------------------------------------------------------------------

    /// <inheritdoc cref="ChannelProducer.SubmitWrite(ChannelTarget, long, ReadOnlySpan{byte}, SpaceWait)"/>
    public AsyncOperation SubmitWrite(ChannelTarget target, long offset, ReadOnlySpan<byte> data, SpaceWait wait) =>
        _producer.SubmitWrite(target, offset, data, wait);

    /// <inheritdoc cref="ChannelProducer.SubmitWrite(ChannelTarget, long, SharedBuffer, int, SpaceWait)"/>
    public AsyncOperation SubmitWrite(ChannelTarget target, long offset, SharedBuffer buffer, int length, SpaceWait wait) =>
        _producer.SubmitWrite(target, offset, buffer, length, wait);

    /// <inheritdoc cref="ChannelProducer.SubmitRead"/>
    public AsyncOperation SubmitBrokerRead(ChannelTarget target, long offset, Memory<byte> buffer, SpaceWait wait) =>
        _producer.SubmitRead(target, offset, buffer, wait);

    /// <inheritdoc cref="ChannelProducer.Rent"/>
    public SharedBuffer Rent(int length, TimeSpan timeout) => _producer.Rent(length, timeout);

    /// <inheritdoc cref="ChannelProducer.TestClaimWithoutPublish"/>
    internal void TestClaimWithoutPublish(ChannelTarget target, long offset, ReadOnlySpan<byte> data) =>
        _producer.TestClaimWithoutPublish(target, offset, data);

    /// <summary>Throws what a submission would throw now: BrokerUnavailable, or ObjectDisposedException for a gone
    /// channel (a caller's checks that must come after these keep their order).</summary>
    public void ThrowIfUnusable() => _region.ThrowIfUnusable();

    // ---- Drain ----------------------------------------------------------------------------------------------

    /// <summary>Whether operations submitted so far are not all terminal yet (a racy but monotonic hint).</summary>
    public bool HasPending => Status.AnyPendingBelow(_producer.Position);

    /// <summary>Spins (never sleeps) up to <paramref name="budgetTicks"/> until every operation submitted so far is
    /// terminal by CompletedThrough; true when they are (at once when none is pending).</summary>
    public bool SettleWithin(long budgetTicks) => Status.SpinCompletedThrough(_producer.Position, budgetTicks);

    /// <summary>Waits until every operation submitted so far is terminal (before a flush, leave or destroy, and before
    /// a synchronous write); false on timeout. True at once for a gone channel or a lost broker.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="token"/> fired.</exception>
    public bool Drain(TimeSpan timeout, CancellationToken token = default) =>
        !_producer.TryGetEnd(out long end) || Status.WaitCompletedThrough(end, timeout, token);

    // ---- Lifetime -------------------------------------------------------------------------------------------

    /// <summary>Closes the channel and unmaps it (unless rented buffers or broker reads may still point into it: then
    /// the mapping stays until the process exits). Operations of it read Failed/BrokerUnavailable (a lost broker)
    /// afterwards, or throw ObjectDisposedException (a disposed client).</summary>
    public void Dispose()
    {
        Retire();
        if (_staging.IsEmpty)
        {
            _region.Unmap(); // a SafeHandle: munmap waits for readers holding a reference
        }
    }

    /// <summary>Closes the channel but keeps its mapping: what a client does with the channel of a broker that was lost
    /// when it connects again. Submissions fail, waiters are released, the completion thread ends; the status words
    /// stay readable, so an operation that completed before the broker died still says Completed (the others read
    /// Failed/BrokerUnavailable). The mapping goes with the client (<see cref="Dispose"/>).</summary>
    public void Retire()
    {
        if (_region.IsGone)
        {
            return;
        }

        _producer.Close(); // marks it gone under the submission lock
        Status.Nudge();    // a completion sleeper wakes and sees it gone
        Completions.Stop();
    }
}
