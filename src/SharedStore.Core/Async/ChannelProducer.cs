using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharedStore.Queues;

namespace SharedStore.Async;

/// <summary>
/// The producer end of this process's submission ring: the four ways in (a write, carried inline in its slot, staged,
/// or in chunks; a zero-copy write from a rented buffer; a broker-path read; renting a buffer), all through one
/// submission lock. The lock makes the ring single-producer — the lock-free SPSC protocol and its membarrier doorbell
/// are argued once, in <see cref="SpscRingProducer"/> — and keeps this process's messages in the order of the
/// submitting calls, which is the order the broker applies them in.
/// <para><b>Steps of a submission</b> (docs/ARCHITECTURE.md §9.3): (1) take the lock; (2) for a staged payload,
/// allocate a staging range (<see cref="StagingAllocator"/>) and copy into it; (3) claim a slot, waiting for space as
/// <see cref="SpaceWait"/> says; (4) write the message (<see cref="WriteMessage"/>, the one place a
/// <see cref="ChannelMessage"/> is written) and any inline data into the slot; (5) commit and publish: the release
/// store of Tail orders the slot and the staged bytes before any broker read that sees it, and the doorbell is rung if
/// the applier sleeps; (6) release the lock. The operation id is the ring position of the (last) message.</para>
/// <para><b>Chunked writes.</b> A write larger than <see cref="StagingAllocator.MaxChunk"/> goes as First … Last
/// messages; the broker write-locks the whole range at First and holds it until Last, so the write is applied whole.
/// Only the first chunk may be refused or time out: once it is published the rest must follow however long staging
/// takes to free (<see cref="SpaceWait.Forever"/>).</para>
/// <para><b>Lifetime.</b> Every entry point takes the lock with <see cref="Enter"/>, which refuses a gone channel;
/// <see cref="Close"/> marks the channel gone under the same lock, so no submission writes into a mapping that is
/// going away (<see cref="ChannelRegion"/>, rule 1).</para>
/// </summary>
internal sealed unsafe partial class ChannelProducer
{
    private readonly AsyncChannel _channel; // the source of the ring operations it returns
    private readonly ChannelRegion _region;
    private readonly StagingAllocator _staging;
    private readonly OpStatusTable _status;
    private readonly CompletionReaper _completions;
    private readonly SpscRingProducer _ring;
    private SubmitLock _lock;

    public ChannelProducer(AsyncChannel channel, ChannelRegion region, StagingAllocator staging, OpStatusTable status, CompletionReaper completions)
    {
        _channel = channel;
        _region = region;
        _staging = staging;
        _status = status;
        _completions = completions;
        ChannelHeader* h = region.Header;
        if (!Doorbell.RegisterProducerProcess())
        {
            // No membarrier: producers fence before they read the doorbell instead (SpscRingProducer.Publish).
            Interlocked.Or(ref h->Doorbell.Flags, Doorbell.ProducersFence);
        }

        _ring = new SpscRingProducer(region.Pointer + h->RingOffset, &h->Doorbell);
        InlineMax = _ring.MaxPayload - ChannelMessage.HeaderSize;
    }

    /// <summary>Largest write carried inside its ring slot.</summary>
    public int InlineMax { get; }

    /// <summary>The ring position the next message gets. Read outside the lock only as a hint (a racy but monotonic
    /// count of submissions).</summary>
    public long Position => _ring.Position;

    // ---- The four ways in ----------------------------------------------------------------------------------

    /// <summary>Submits a write of <paramref name="data"/>: inline in its slot, staged, or in chunks. Returns once the
    /// payload is in shared memory. The caller refuses a chunked write over a range this process holds a lease on
    /// (the broker would wait for that lease while this call waits for the broker to free staging).</summary>
    public AsyncOperation SubmitWrite(ChannelTarget target, long offset, ReadOnlySpan<byte> data, SpaceWait wait)
    {
        // A lost broker must be reported as documented (BrokerUnavailable, nothing submitted), not by an operation
        // published into a ring nobody consumes: while the ring had space, submissions used to succeed after the
        // broker died and only their status said Failed.
        _region.ThrowIfUnusable();
        if (data.Length <= InlineMax)
        {
            Enter();
            try
            {
                if (!ClaimSlot(wait, out Span<byte> slot))
                {
                    return Rejected();
                }

                data.CopyTo(WriteMessage(slot, ChannelMessage.KindWrite, ChannelMessage.FlagWhole, target, data.Length, offset, stagingOffset: 0, data.Length));
                return Publish(ChannelMessage.HeaderSize + data.Length);
            }
            finally
            {
                _lock.Exit();
            }
        }

        if (data.Length <= _staging.MaxChunk)
        {
            Enter();
            try
            {
                StagingRange? r = _staging.Allocate(data.Length, wait);
                if (r is null)
                {
                    return Rejected();
                }

                data.CopyTo(new Span<byte>(_staging.PointerOf(r), data.Length));
                return SubmitStaged(ChannelMessage.KindWrite, target, offset, data.Length, r, ChannelMessage.FlagWhole, data.Length, wait);
            }
            finally
            {
                _lock.Exit();
            }
        }

        return SubmitChunked(target, offset, data, wait);
    }

    /// <summary>Zero copy: submits a write from a rented buffer; the buffer belongs to the operation afterwards.</summary>
    public AsyncOperation SubmitWrite(ChannelTarget target, long offset, SharedBuffer buffer, int length, SpaceWait wait)
    {
        _region.ThrowIfUnusable();
        Enter();
        try
        {
            StagingRange r = buffer.TakeRange(_staging);
            bool claimed;
            try
            {
                claimed = ClaimSlot(wait, out _);
            }
            catch
            {
                // Timeout, or the broker lost: nothing was submitted, so the buffer stays the caller's. Taking it
                // for good here leaked its range, Held forever, and with it every later staging allocation (they
                // are freed in order).
                buffer.Restore(r);
                throw;
            }

            if (!claimed)
            {
                buffer.Restore(r);
                return Rejected();
            }

            r.State = StagingRange.Submitted;
            return SubmitStaged(ChannelMessage.KindWrite, target, offset, length, r, ChannelMessage.FlagWhole, length, wait);
        }
        finally
        {
            _lock.Exit();
        }
    }

    /// <summary>The broker-path read: the broker fills a staging range that the completion thread copies out into
    /// <paramref name="buffer"/>.</summary>
    public AsyncOperation SubmitRead(ChannelTarget target, long offset, Memory<byte> buffer, SpaceWait wait)
    {
        _region.ThrowIfUnusable();
        if (buffer.Length > _staging.MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(buffer), buffer.Length, $"the broker read path reads at most {_staging.MaxChunk} bytes per call");
        }

        Enter();
        try
        {
            StagingRange? r = _staging.Allocate(buffer.Length, wait);
            if (r is null)
            {
                return Rejected();
            }

            r.State = StagingRange.Held; // freed by the completion thread after it copied the data out
            if (!TrySubmitStaged(ChannelMessage.KindRead, target, offset, buffer.Length, r, ChannelMessage.FlagWhole, buffer.Length, wait, out long position))
            {
                // The ring was full (AsyncFullMode.Fail): the range is free again and nothing was submitted. This used
                // to go on and wait for ring position -1, whose entry belongs to another operation.
                return Rejected();
            }

            var op = new BrokerReadOperation(_status, _staging, position, r, buffer);
            _completions.Register(op); // under the lock: the channel cannot be marked gone in between
            return new AsyncOperation(op, 0, position);
        }
        finally
        {
            _lock.Exit();
        }
    }

    /// <summary>Rents <paramref name="length"/> bytes of staging for a zero-copy write, waiting up to
    /// <paramref name="timeout"/> for space.</summary>
    public SharedBuffer Rent(int length, TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (length > _staging.MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"a rented buffer holds at most {_staging.MaxChunk} bytes (a quarter of the staging area)");
        }

        Enter();
        try
        {
            StagingRange r = _staging.Allocate(length, SpaceWait.Wait(timeout))!; // never null: it waits
            r.State = StagingRange.Held;
            return new SharedBuffer(_staging, r, _staging.PointerOf(r), length);
        }
        finally
        {
            _lock.Exit();
        }
    }

    private AsyncOperation SubmitChunked(ChannelTarget target, long offset, ReadOnlySpan<byte> data, SpaceWait wait)
    {
        Enter();
        try
        {
            long first = -1, last = -1;
            long done = 0;
            while (done < data.Length)
            {
                int n = (int)Math.Min(_staging.MaxChunk, data.Length - done);
                // Only the first chunk may be refused or time out: once it is in the ring the broker holds the
                // range's locks (and may have applied it) until the last chunk, so the write is accepted and the rest
                // must follow however long staging takes to free. Giving up here left the broker waiting for chunks
                // that never came: the next message was taken for a broken continuation and failed, and the range
                // was left half written and torn, although the call had thrown "nothing submitted".
                SpaceWait chunkWait = first < 0 ? wait : SpaceWait.Forever;
                StagingRange? r = _staging.Allocate(n, chunkWait);
                if (r is null)
                {
                    return Rejected();
                }

                data.Slice((int)done, n).CopyTo(new Span<byte>(_staging.PointerOf(r), n));
                byte flags = (byte)((first < 0 ? ChannelMessage.FlagFirst : 0) | (done + n == data.Length ? ChannelMessage.FlagLast : 0));
                if (!TrySubmitStaged(ChannelMessage.KindWrite, target, offset + done, n, r, flags, data.Length, chunkWait, out long position))
                {
                    return Rejected(); // the first chunk was refused (full): nothing was submitted
                }

                if (first < 0)
                {
                    first = position;
                    if (_status.StatusOf(position, position).Status == AsyncStatus.Failed)
                    {
                        // Failed already (the broker refused it at once, or is gone): the broker finishes the
                        // continuations the same way, so staging them would only cost copies.
                        return Op(position, position);
                    }
                }

                last = position;
                done += n;
            }

            return Op(first, last);
        }
        finally
        {
            _lock.Exit();
        }
    }

    // ---- Steps -----------------------------------------------------------------------------------------------

    /// <summary>Step 1: takes the submission lock of a channel that is not gone (<see cref="Close"/> takes it too).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enter()
    {
        _lock.Enter();
        if (_region.IsGone)
        {
            _lock.Exit();
            _region.ThrowIfUnusable();
        }
    }

    /// <summary>Step 3: claims a ring slot, waiting for space as <paramref name="wait"/> says; false when full and
    /// refused.</summary>
    /// <exception cref="SharedStoreException">Timeout (the ring stayed full); BrokerUnavailable.</exception>
    private bool ClaimSlot(SpaceWait wait, out Span<byte> slot)
    {
        Debug.Assert(_lock.IsHeld, "the ring is single-producer only under the submission lock");
        if (_ring.TryClaim(out slot))
        {
            return true;
        }

        _region.ThrowIfUnusable();
        if (wait.FailWhenFull)
        {
            return false;
        }

        var deadline = Deadline.After(wait.Timeout);
        var slice = TimeSpan.FromMilliseconds(50);
        while (!_ring.TryClaim(out slot))
        {
            _region.ThrowIfUnusable();
            // Remaining is InfiniteTimeSpan (-1 ms) without a deadline: compare only a finite one, else the default
            // infinite AsyncSubmitTimeout threw Timeout at the first full ring instead of waiting.
            TimeSpan left = deadline.Remaining;
            if (!deadline.IsInfinite && left <= TimeSpan.Zero)
            {
                ThrowHelper.Timeout("asynchronous submission (the ring stayed full)");
            }

            // In slices, so a broker that died meanwhile is noticed.
            _ring.WaitForSpace(deadline.IsInfinite || left > slice ? slice : left, default);
        }

        return true;
    }

    /// <summary>Step 4, the one writer of a <see cref="ChannelMessage"/> (layout and flags: its descriptor): fills the
    /// header at the start of a claimed slot and returns the rest of the slot, where inline data goes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Span<byte> WriteMessage(Span<byte> slot, byte kind, byte flags, ChannelTarget target, int length, long offset, long stagingOffset, long totalLength)
    {
        ref ChannelMessage m = ref MemoryMarshal.AsRef<ChannelMessage>(slot);
        m.Kind = kind;
        m.Flags = flags;
        m.ContainerId = target.ContainerId;
        m.ObjectId = target.ObjectId;
        m.Length = length;
        m.Offset = offset;
        m.StagingOffset = stagingOffset;
        m.TotalLength = totalLength;
        return slot[ChannelMessage.HeaderSize..];
    }

    /// <summary>Steps 3–5 for a payload already in staging range <paramref name="r"/>. When the claim is refused the
    /// range is freed and nothing is submitted.</summary>
    private bool TrySubmitStaged(byte kind, ChannelTarget target, long offset, int length, StagingRange r, byte flags, long totalLength, SpaceWait wait, out long position)
    {
        if (!ClaimSlot(wait, out Span<byte> slot))
        {
            StagingAllocator.Free(r);
            position = -1;
            return false;
        }

        WriteMessage(slot, kind, (byte)(flags | ChannelMessage.FlagStaged), target, length, offset, r.Offset, totalLength);
        position = _ring.Position;
        r.OpPosition = position; // a Submitted range is freed once this operation is terminal
        Commit(ChannelMessage.HeaderSize);
        return true;
    }

    private AsyncOperation SubmitStaged(byte kind, ChannelTarget target, long offset, int length, StagingRange r, byte flags, long totalLength, SpaceWait wait) =>
        TrySubmitStaged(kind, target, offset, length, r, flags, totalLength, wait, out long position) ? Op(position, position) : Rejected();

    /// <summary>Step 5 for an inline message: commit and publish.</summary>
    private AsyncOperation Publish(int length)
    {
        long position = _ring.Position;
        Commit(length);
        return Op(position, position);
    }

    /// <summary>Step 5: records the slot's length and publishes it (release store of Tail, then the doorbell).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Commit(int length)
    {
        _ring.Commit(length);
        _ring.Publish();
    }

    private AsyncOperation Op(long first, long last) => new(_channel, first, last);

    private static AsyncOperation Rejected() => new(new RejectedOperation(), 0, -1);

    // ---- Lifetime --------------------------------------------------------------------------------------------

    /// <summary>Marks the channel gone under the submission lock: a submission in progress finishes first, and every
    /// later one is refused.</summary>
    public void Close()
    {
        _lock.Enter();
        _region.MarkGone();
        _lock.Exit();
    }

    /// <summary>The ring position every operation submitted so far lies below, read under the lock; false when the
    /// channel is gone (nothing of it can complete any more).</summary>
    public bool TryGetEnd(out long end)
    {
        _lock.Enter();
        try
        {
            end = _ring.Position;
            return !_region.IsGone;
        }
        finally
        {
            _lock.Exit();
        }
    }
}
