namespace SharedStore.Async;

/// <summary>
/// The staging area of this process's channel: shared memory that carries writes too large for a ring slot, rented
/// zero-copy buffers and the broker-path reads. A ring allocator over monotonic byte positions: ranges are handed out
/// in order at <c>_allocPos</c> (a range never wraps: the tail of the area is skipped as a free filler range instead)
/// and freed strictly in allocation order, by moving <c>_freePos</c> past the oldest range once it is reclaimable.
/// Allocation is bounded by <c>_allocPos − _freePos ≤ Size</c>.
/// <para><b>Who touches what.</b> Allocation and reclaiming run only under the producer's submission lock, so the
/// queue and both positions need no lock of their own. The one field written from other threads is a range's
/// <see cref="StagingRange.State"/>: set Free with a release store by whoever finishes with it (a rented buffer
/// disposed unsubmitted, the completion thread after it copied a broker read out), read here with an acquire load.</para>
/// <para><b>Why the order of frees is safe.</b> A Submitted range is reclaimed only once its operation is terminal
/// (<see cref="OpStatusTable.IsTerminal"/>): the broker stores the terminal status word (release) after it finished
/// reading the range, and the acquire load of that word orders it before this process writes the range again. The
/// client's staged bytes, in turn, are written before the message's Tail store (release) that lets the broker read
/// them. Freeing in allocation order keeps the allocator a single pair of positions: a young range freed early waits
/// for the older ones, which is what makes a slow operation hold back the area (and a chunked write free it chunk by
/// chunk: the broker marks each chunk's word as it finishes copying it).</para>
/// </summary>
internal sealed unsafe class StagingAllocator
{
    private readonly byte* _base;
    private readonly long _size;
    private readonly ChannelRegion _region;
    private readonly OpStatusTable _status;
    private readonly Queue<StagingRange> _ranges = new();
    private long _allocPos;
    private long _freePos;

    public StagingAllocator(ChannelRegion region, OpStatusTable status)
    {
        _region = region;
        _status = status;
        _base = region.Pointer + region.Header->StagingOffset;
        _size = region.Header->StagingSize;
        MaxChunk = Math.Max(4096, (_size / 4) & ~63L);
    }

    /// <summary>Staging bytes.</summary>
    public long Size => _size;

    /// <summary>Largest single range: a quarter of the area, so a large write in chunks keeps up to four in flight.</summary>
    public long MaxChunk { get; }

    /// <summary>Whether no range is outstanding (every one was reclaimed). Only when the channel is gone: a channel
    /// with outstanding ranges stays mapped, because rented buffers or broker reads may still point into it.</summary>
    public bool IsEmpty => _ranges.Count == 0;

    /// <summary>Where <paramref name="range"/> starts in this process.</summary>
    public byte* PointerOf(StagingRange range) => _base + range.Offset;

    /// <summary>Frees a range its holder is done with (a rented buffer disposed unsubmitted, a broker read copied
    /// out, a refused submission). Any thread: one release store, picked up by the next allocation.</summary>
    public static void Free(StagingRange range) => Volatile.Write(ref range.State, StagingRange.Free);

    /// <summary>Allocates <paramref name="length"/> bytes (rounded up to 64), reclaiming finished ranges and waiting
    /// for more as <paramref name="wait"/> says; null when full and <see cref="SpaceWait.FailWhenFull"/>. Under the
    /// submission lock. The range starts Submitted; the caller sets Held for a range it keeps.</summary>
    /// <exception cref="SharedStoreException">Timeout (the area stayed full); BrokerUnavailable.</exception>
    /// <exception cref="ObjectDisposedException">The channel is gone.</exception>
    public StagingRange? Allocate(int length, SpaceWait wait)
    {
        long need = (length + 63) & ~63L;
        var deadline = Deadline.After(wait.Timeout);
        while (true)
        {
            long off = _allocPos % _size;
            long waste = off + need > _size ? _size - off : 0;
            if (_allocPos + waste + need - _freePos <= _size)
            {
                if (waste > 0)
                {
                    _ranges.Enqueue(new StagingRange(_allocPos, waste) { State = StagingRange.Free });
                    _allocPos += waste;
                }

                var r = new StagingRange(_allocPos, need) { Offset = _allocPos % _size };
                _allocPos += need;
                _ranges.Enqueue(r);
                return r;
            }

            if (Reclaim())
            {
                continue;
            }

            _region.ThrowIfUnusable();
            if (wait.FailWhenFull)
            {
                return null;
            }

            if (!_status.WaitUntil(static a => a.CanReclaim(), this, deadline.Remaining, default))
            {
                ThrowHelper.Timeout("asynchronous submission (the staging area stayed full)");
            }
        }
    }

    private bool CanReclaim() =>
        _ranges.TryPeek(out var r) && IsReclaimable(r) || _region.BrokerLost || _region.IsGone;

    /// <summary>Free, or Submitted and its operation is terminal.</summary>
    private bool IsReclaimable(StagingRange r)
    {
        int state = Volatile.Read(ref r.State); // acquire: pairs with Free's release store
        if (state != StagingRange.Submitted)
        {
            return state == StagingRange.Free;
        }

        return _status.IsTerminal(r.OpPosition);
    }

    private bool Reclaim()
    {
        bool any = false;
        while (_ranges.TryPeek(out var r) && IsReclaimable(r))
        {
            _ranges.Dequeue();
            _freePos = r.Start + r.Length;
            any = true;
        }

        return any;
    }
}

/// <summary>A staging range in allocation order (positions are monotonic; Offset is the byte offset in staging).</summary>
internal sealed class StagingRange(long start, long length)
{
    public const int Held = 0;        // rented, or a broker read not yet copied out
    public const int Submitted = 1;   // in the ring; free once its operation is terminal
    public const int Free = 2;

    public long Start { get; } = start;

    public long Length { get; } = length;

    public long Offset { get; init; }

    /// <summary>Ring position of the operation a Submitted range belongs to (written under the submission lock).</summary>
    public long OpPosition;

    /// <summary>Held, Submitted or Free; see <see cref="StagingAllocator"/> for who writes it.</summary>
    public int State = Submitted;
}
