using System.Runtime.CompilerServices;
using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>One span of written bytes, for the whole-block check of <see cref="BlockRange.ReleaseWrite(ReadOnlySpan{WrittenSpan})"/>.</summary>
internal readonly record struct WrittenSpan(long Offset, long Length);

/// <summary>
/// The block-range lock protocol: the blocks [<see cref="First"/>, <see cref="Last"/>] of one object, as one process
/// sees them (<see cref="ObjectView"/>), taken for reading or writing with <see cref="BlockLock"/> one block at a time
/// in ascending order within one <see cref="LockWait"/> budget. On any failure (timeout, cancellation, broker loss)
/// the blocks already taken are released in reverse order before the call returns, so a failed call holds nothing.
/// A write release decides per block whether the block was rewritten whole (only then may its torn mark be cleared)
/// and, in a durable container, marks it dirty. The range also owns the reads and changes of the blocks' Torn and
/// Dirty flags. Every caller takes ranges through it: <c>SharedObject</c> (get, put, write, the direct path of awrite, the WouldDeadlock check),
/// <c>ClientReadOperation</c> (aread), the broker's <c>AsyncApplier</c> (groups, chunked writes, broker-path reads)
/// and <c>DurableStore</c> (write-back holds, restore's marks).
/// <para><b>Why ascending order cannot deadlock.</b> Call a thread that waits inside a range acquisition
/// <i>blocked</i> on the block it waits for. Every block it holds from this acquisition is below that block, and the
/// protocol assumes it holds nothing else while it waits (see the last paragraph). A blocked thread T on block c waits
/// for one of: (a) a thread that holds c (the writer owning c, for a waiting writer or a reader that holds nothing of
/// c; the readers of c, for the owner draining them); or (b) a writer that waits to own c and has announced it in the
/// record's Waiting word (a reader that holds nothing of c defers to it: writer priority). A writer that only waits to
/// own c in turn waits for c's owner, case (a). So every chain of waits from T reaches, within at most two steps on
/// block c, a thread U that holds c; if U is itself blocked, it is blocked on a block above c, since it acquires in
/// ascending order and already holds c. Along any chain the waited-for block never decreases and rises at least every
/// second step, so no chain returns to T: there is no cycle, hence no deadlock, among any number of readers and
/// writers of any processes (the broker's threads included: its appliers and write-back take ranges through here with
/// the broker's slot, and the write-back never waits).</para>
/// <para><b>Why a process cannot wait for itself.</b> Read holds belong to a process's slot, not to a thread (one
/// byte per slot), and a writer drains every reader byte, its own slot's too. A write over a block that its own
/// process read-holds would therefore wait for that hold, forever when the holder is the writing thread (a lease it
/// keeps). <see cref="FirstReadHeld"/> finds such a block before anything is taken, and the callers refuse the write
/// with <c>WouldDeadlock</c> (a synchronous write, and a chunked asynchronous write, which the broker holds for the
/// whole range across chunks). The converse cannot wedge: a read of a block its own process is writing waits for that
/// write, which does not wait for the reader. A read that re-enters a block its process already holds passes a waiting
/// writer (<see cref="BlockLock"/>, reader step 1), so a second get over a leased block never waits behind a writer
/// that waits for the first.</para>
/// <para><b>What the argument does not cover.</b> Holds kept across calls: a lease is a read hold its caller keeps
/// after <c>Get</c> returns. A caller that then takes a range below a block it still holds (a get of blocks 2-7 while
/// keeping a lease on block 5) breaks "holds nothing else", and can wait for a writer that waits for its lease; the
/// wait ends with the call's timeout. Take ranges in ascending order across calls too, or put first.</para>
/// </summary>
internal readonly unsafe struct BlockRange
{
    private readonly ObjectView _view;

    /// <summary>The blocks <paramref name="first"/> … <paramref name="last"/> of <paramref name="view"/> (none when
    /// <paramref name="last"/> is below <paramref name="first"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BlockRange(ObjectView view, long first, long last)
    {
        _view = view;
        First = first;
        Last = last;
    }

    /// <summary>The view whose blocks these are.</summary>
    public ObjectView View => _view;

    public long First { get; }

    /// <summary>The last block; below <see cref="First"/> for an empty range.</summary>
    public long Last { get; }

    // ---- Reads ---------------------------------------------------------------------------------------------

    /// <summary>The uncontended one-block get: a range of exactly one block read-held at once (one CAS, no clock, no
    /// wait state). False, holding nothing, for any other range or when the block needs a wait.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAcquireOneReadFast(out bool torn)
    {
        if (First != Last || !TryReadFast(_view, First))
        {
            torn = false;
            return false;
        }

        torn = BlockLock.IsTorn(_view.Record(First));
        return true;
    }

    /// <summary>Read-holds every block without waiting, all or nothing: false when one needs a wait (those taken
    /// are released in reverse).</summary>
    public bool TryAcquireReadFast()
    {
        for (long b = First; b <= Last; b++)
        {
            if (!TryReadFast(_view, b))
            {
                ReleaseReads(b - 1);
                return false;
            }
        }

        return true;
    }

    /// <summary>Read-holds every block, ascending, within <paramref name="wait"/>'s budget. On anything but Acquired
    /// nothing is held. <paramref name="torn"/>: a block of the range is marked torn.</summary>
    public LockStatus AcquireRead(ref LockWait wait, out bool torn)
    {
        torn = false;
        for (long b = First; b <= Last; b++)
        {
            BlockLockRecord* rec = _view.Record(b);
            LockStatus s = _view.Ledger is { } ledger ? ledger.AcquireRead(rec, b, ref wait) : BlockLock.AcquireRead(rec, _view.Slot, ref wait);
            if (s != LockStatus.Acquired)
            {
                ReleaseReads(b - 1);
                return s;
            }

            torn |= BlockLock.IsTorn(rec);
        }

        return LockStatus.Acquired;
    }

    /// <summary>Releases the read holds of every block (ascending).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReleaseRead()
    {
        for (long b = First; b <= Last; b++)
        {
            ReleaseReadOf(_view, b);
        }
    }

    /// <summary>The WouldDeadlock check: the first block of the range on which this process's slot holds a read, or
    /// -1. A write there would wait for that hold (see the class comment).</summary>
    public long FirstReadHeld()
    {
        for (long b = First; b <= Last; b++)
        {
            if (BlockLock.ReadHolds(_view.Record(b), _view.Slot) != 0)
            {
                return b;
            }
        }

        return -1;
    }

    // ---- Writes --------------------------------------------------------------------------------------------

    /// <summary>Write-holds every block, ascending, within <paramref name="wait"/>'s budget. On anything but Acquired
    /// nothing is held (those taken are released in reverse, unchanged: not dirty, torn marks kept).</summary>
    public LockStatus AcquireWrite(ref LockWait wait)
    {
        for (long b = First; b <= Last; b++)
        {
            BlockLockRecord* rec = _view.Record(b);
            LockStatus s = _view.Ledger is { } ledger
                ? ledger.AcquireWrite(rec, b, ref wait)
                : BlockLock.AcquireWrite(rec, _view.Slot, _view.WaitGate, ref _view.LocalWaiters(b), ref wait);
            if (s != LockStatus.Acquired)
            {
                for (long u = b - 1; u >= First; u--)
                {
                    ReleaseWriteOf(_view, u, wroteWholeBlock: false, markDirty: false);
                }

                return s;
            }
        }

        return LockStatus.Acquired;
    }

    /// <summary>Write-holds every block only if none of them needs a wait, all or nothing: false, holding nothing, as
    /// soon as one block is owned by another writer, has readers (this process's own leases included) or is wanted by
    /// a waiting writer that got there first. Used by an asynchronous write that its caller applies itself when the
    /// blocks are free (<c>SharedObject.AWrite</c>). It is <see cref="AcquireWrite"/> with a zero budget: every step
    /// is tried once, nothing spins or sleeps, and the blocks taken before a busy one are released in reverse,
    /// unchanged. A failed try may have announced itself for an instant (the Waiting bit, an Owner word while it
    /// looked for readers); readers that backed off meanwhile are woken by the release, as after any writer that gave
    /// up.</summary>
    public bool TryAcquireWriteNow(LockWaitPolicy policy)
    {
        var wait = new LockWait(policy, TimeSpan.Zero, CancellationToken.None);
        return AcquireWrite(ref wait) == LockStatus.Acquired;
    }

    /// <summary>Releases the write of every block (ascending) after [<paramref name="offset"/>,
    /// <paramref name="offset"/>+<paramref name="length"/>) was written: see <see cref="ReleaseWrite(ReadOnlySpan{WrittenSpan})"/>.</summary>
    public void ReleaseWrite(long offset, long length)
    {
        var written = new WrittenSpan(offset, length);
        ReleaseWrite(new ReadOnlySpan<WrittenSpan>(in written));
    }

    /// <summary>Releases the write of every block (ascending). A block that one of <paramref name="written"/> covers
    /// whole (<see cref="IsWholeBlock"/>) loses its torn mark; in a durable container every block is marked dirty
    /// while the write is still held, so a write-back that read-locks it afterwards sees it.</summary>
    public void ReleaseWrite(ReadOnlySpan<WrittenSpan> written)
    {
        for (long b = First; b <= Last; b++)
        {
            bool whole = false;
            foreach (WrittenSpan w in written)
            {
                if (IsWholeBlock(b, w.Offset, w.Length))
                {
                    whole = true;
                    break;
                }
            }

            ReleaseWriteOf(_view, b, whole, _view.Durable);
        }
    }

    /// <summary>The writer stopped part way (a chunked write cut off): every block is marked torn (and dirty), then
    /// released, as if its writer had been killed mid-write.</summary>
    public void ReleaseWriteTorn()
    {
        for (long b = First; b <= Last; b++)
        {
            BlockLock.MarkTorn(_view.Record(b));
            ReleaseWriteOf(_view, b, wroteWholeBlock: false, _view.Durable);
        }
    }

    /// <summary>The whole-block check: whether [<paramref name="offset"/>, <paramref name="offset"/>+<paramref name="length"/>)
    /// covers all of block <paramref name="block"/> (up to the object's end for a short last block). Only such a
    /// write may clear the block's torn mark: a partial one leaves bytes of the torn write in place.</summary>
    public bool IsWholeBlock(long block, long offset, long length)
    {
        long start = block << _view.BlockShift;
        long end = Math.Min(start + (1L << _view.BlockShift), _view.Size);
        return offset <= start && offset + length >= end;
    }

    // ---- Flags ---------------------------------------------------------------------------------------------

    /// <summary>Whether a block of the range is marked torn. Exact under a hold of the range, a hint otherwise.</summary>
    public bool AnyTorn()
    {
        for (long b = First; b <= Last; b++)
        {
            if (BlockLock.IsTorn(_view.Record(b)))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether a block of the range is marked dirty (a racy look, for skipping clean blocks).</summary>
    public bool AnyDirty()
    {
        for (long b = First; b <= Last; b++)
        {
            if (BlockLock.IsDirty(_view.Record(b)))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Write-back, under a read hold of the range: clears every block's dirty mark; true when one was set.</summary>
    public bool TakeDirty()
    {
        bool any = false;
        for (long b = First; b <= Last; b++)
        {
            any |= BlockLock.TakeDirty(_view.Record(b));
        }

        return any;
    }

    /// <summary>Marks every block dirty again (its write-back failed).</summary>
    public void MarkDirty()
    {
        for (long b = First; b <= Last; b++)
        {
            BlockLock.MarkDirty(_view.Record(b));
        }
    }

    /// <summary>Marks every block torn (and dirty): restore found no intact copy, or the copy was torn when written.</summary>
    public void MarkTorn()
    {
        for (long b = First; b <= Last; b++)
        {
            BlockLock.MarkTorn(_view.Record(b));
        }
    }

    /// <summary>After a restore: the blocks match their durable copies, so their dirty marks go, except on torn blocks
    /// (a torn block is written back again, flagged torn).</summary>
    public void MarkCleanUnlessTorn()
    {
        for (long b = First; b <= Last; b++)
        {
            BlockLock.ClearDirtyUnlessTorn(_view.Record(b));
        }
    }

    // ---- One block, through the view's slot --------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryReadFast(ObjectView v, long b) =>
        v.Ledger is { } ledger ? ledger.TryAcquireReadFast(v.Record(b), b) : BlockLock.TryAcquireReadFast(v.Record(b), v.Slot);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ReleaseReadOf(ObjectView v, long b)
    {
        if (v.Ledger is { } ledger)
        {
            ledger.ReleaseRead(v.Record(b), b);
        }
        else
        {
            BlockLock.ReleaseRead(v.Record(b), v.Slot);
        }
    }

    private static void ReleaseWriteOf(ObjectView v, long b, bool wroteWholeBlock, bool markDirty)
    {
        if (v.Ledger is { } ledger)
        {
            ledger.ReleaseWrite(v.Record(b), b, wroteWholeBlock, markDirty);
        }
        else
        {
            BlockLock.ReleaseWrite(v.Record(b), wroteWholeBlock, markDirty);
        }
    }

    /// <summary>Rollback of a read acquisition: releases blocks <paramref name="through"/> … <see cref="First"/>.</summary>
    private void ReleaseReads(long through)
    {
        for (long u = through; u >= First; u--)
        {
            ReleaseReadOf(_view, u);
        }
    }
}
