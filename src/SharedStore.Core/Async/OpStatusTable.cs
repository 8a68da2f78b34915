using System.Diagnostics;
using SharedStore.Queues;

namespace SharedStore.Async;

/// <summary>
/// What the broker writes back into this process's channel, read without a round trip: one status entry per ring
/// slot (<see cref="OpStatusEntry"/>), <c>CompletedThrough</c>, and the completion word that a waiting thread of this
/// process sleeps on. It answers opstatus, opcancel and opreturn, and every wait for completions (an operation's
/// <c>Wait</c>, a drain before leave or destroy, a submission waiting for staging, the completion thread).
/// <para><b>Status words</b> (layout and states: <see cref="ChannelDescriptor"/>). The op at ring position p owns entry
/// p mod SlotCount. A word naming an older position (or the zero word) means "pending": the applier has not picked p
/// up. The broker writes Result before it stores a terminal word (release), so a reader that sees Done with an
/// acquire load reads the right Result. A word naming a <i>newer</i> position means the entry was reused a ring lap
/// later: the calls throw instead of reporting another operation's state.</para>
/// <para><b>Cancel is all-or-nothing.</b> Only two writers ever move a word away from "pending for p": the applier
/// (CAS to Applying, before it touches the op) and <see cref="Cancel"/> (CAS to CancelRequested). Both CAS from the
/// same value, so exactly one wins. A chunked write is decided by its <i>first</i> chunk's word, which the applier
/// claims before any chunk is applied, so it is never applied by halves.</para>
/// <para><b>No lost completion wake-up</b> (<see cref="WaitUntil"/>). A sleeper sets bit 0 of the completion word
/// with a CAS (a full fence), re-checks its condition, and only then FUTEX_WAITs on the word's value. The broker,
/// after a batch's status stores, stores CompletedThrough with a locked exchange and then reads the word, clearing bit
/// 0 and waking if it is set. Dekker: either the sleeper's re-check sees the new statuses, or the broker's read sees
/// bit 0 and wakes it. This process's own wake-ups (<see cref="Nudge"/>: a new awaiter, a cancel) add 2 to the word,
/// so a sleeper about to wait on the old value returns at once.</para>
/// <para>Every call reads the mapping under a reference (<see cref="ChannelRegion"/>, rule 2), except
/// <see cref="IsTerminal"/> and <see cref="WaitUntil"/>, whose callers hold the submission lock or a reference.</para>
/// </summary>
internal sealed unsafe class OpStatusTable
{
    /// <summary>Longest single FUTEX_WAIT on the completion word: waiters notice a lost broker or a gone channel
    /// within this.</summary>
    private const long SleepSliceNs = 50_000_000;

    private readonly ChannelRegion _region;
    private readonly ChannelHeader* _h;
    private readonly OpStatusEntry* _entries;
    private readonly long _slotMask;
    private readonly long _spinTicks;

    public OpStatusTable(ChannelRegion region)
    {
        _region = region;
        _h = region.Header;
        _entries = (OpStatusEntry*)(region.Pointer + _h->StatusOffset);
        _slotMask = _h->SlotCount - 1;
        _spinTicks = region.SpinTicks;
    }

    // ---- opstatus / opreturn ---------------------------------------------------------------------------------

    /// <summary>Status and result of the operation whose messages span ring positions
    /// <paramref name="first"/>..<paramref name="last"/> (one message: equal).</summary>
    /// <exception cref="InvalidOperationException">The entry was reused by a later operation.</exception>
    /// <exception cref="ObjectDisposedException">The channel was unmapped with its client (and its broker is not lost).</exception>
    public (AsyncStatus Status, long Result) StatusOf(long first, long last)
    {
        // A channel disposed since (its client disposed, or its broker lost and the client connected again) may be
        // unmapped: the reference keeps it mapped for the read, and a channel that is gone answers without touching it.
        if (!_region.TryEnter())
        {
            return _region.BrokerLost ? (AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable) : throw new ObjectDisposedException(nameof(AsyncChannel));
        }

        try
        {
            return StatusOfMapped(first, last);
        }
        finally
        {
            _region.Exit();
        }
    }

    private (AsyncStatus Status, long Result) StatusOfMapped(long first, long last)
    {
        OpStatusEntry* e = _entries + (last & _slotMask);
        ulong w = Volatile.Read(ref e->Word); // acquire: Result was written before a terminal word
        if (!OpStatusEntry.IsPendingFor(w, last))
        {
            if (OpStatusEntry.PositionOf(w) != last)
            {
                ThrowExpired(last);
            }

            switch (OpStatusEntry.StateOf(w))
            {
                case OpState.Done: return (AsyncStatus.Completed, Volatile.Read(ref e->Result));
                case OpState.Failed: return (AsyncStatus.Failed, Volatile.Read(ref e->Result));
                case OpState.Canceled:
                case OpState.CancelRequested: return (AsyncStatus.Canceled, -(long)ErrorCode.Canceled);
                default: break; // applying
            }
        }
        else if (first != last)
        {
            // A chunked write whose last chunk is still pending: its first chunk's word decides a cancel.
            ulong w1 = Volatile.Read(ref _entries[first & _slotMask].Word);
            if (OpStatusEntry.PositionOf(w1) == first && OpStatusEntry.StateOf(w1) is OpState.CancelRequested or OpState.Canceled)
            {
                return (AsyncStatus.Canceled, -(long)ErrorCode.Canceled);
            }
        }

        if (_region.BrokerLost)
        {
            return (AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
        }

        return (AsyncStatus.InProgress, 0);
    }

    /// <summary>Whether the op at <paramref name="position"/> is terminal: below the batch watermark, or by its own
    /// status word (the broker writes it when that message's copy finished, before its batch ends, so large staged
    /// writes free their staging one by one). The caller holds the submission lock or a reference.</summary>
    public bool IsTerminal(long position)
    {
        if (position < CompletedThrough)
        {
            return true;
        }

        ulong w = Volatile.Read(ref _entries[position & _slotMask].Word); // acquire: the broker is done with the op's staging
        return OpStatusEntry.PositionOf(w) == position && OpStatusEntry.StateOf(w) is OpState.Done or OpState.Failed or OpState.Canceled;
    }

    /// <summary>Whether operations below ring position <paramref name="end"/> are not all terminal yet (a racy but
    /// monotonic hint). False for a channel that is gone: nothing of it can complete any more.</summary>
    public bool AnyPendingBelow(long end)
    {
        if (end == 0 || !_region.TryEnter())
        {
            return false; // nothing submitted yet (CompletedThrough starts at 0), or gone
        }

        try
        {
            return CompletedThrough < end;
        }
        finally
        {
            _region.Exit();
        }
    }

    // ---- opcancel --------------------------------------------------------------------------------------------

    /// <summary>Cancels the operation whose first message is at <paramref name="first"/> (its word decides for every
    /// chunk): true when it will never be applied.</summary>
    /// <exception cref="InvalidOperationException">The entry was reused by a later operation.</exception>
    public bool Cancel(long first)
    {
        if (!_region.TryEnter())
        {
            return false; // the channel is gone: nothing of it can be canceled any more
        }

        try
        {
            OpStatusEntry* e = _entries + (first & _slotMask);
            while (true)
            {
                ulong w = Volatile.Read(ref e->Word);
                if (OpStatusEntry.IsPendingFor(w, first))
                {
                    // Races only with the applier's CAS from the same word to Applying: exactly one of the two wins.
                    if (Interlocked.CompareExchange(ref e->Word, OpStatusEntry.Make(first, OpState.CancelRequested), w) == w)
                    {
                        return true;
                    }

                    continue;
                }

                if (OpStatusEntry.PositionOf(w) != first)
                {
                    ThrowExpired(first);
                }

                return OpStatusEntry.StateOf(w) is OpState.CancelRequested or OpState.Canceled;
            }
        }
        finally
        {
            _region.Exit();
        }
    }

    // ---- Waits -----------------------------------------------------------------------------------------------

    /// <summary>Blocks until the operation is terminal or the timeout passed; true when terminal (or the channel is
    /// gone: its status then answers without the mapping).</summary>
    public bool WaitFor(long first, long last, TimeSpan timeout, CancellationToken token)
    {
        if (!_region.TryEnter())
        {
            return true;
        }

        try
        {
            return WaitUntil(static s => s.Table.StatusOf(s.First, s.Last).Status != AsyncStatus.InProgress, (Table: this, First: first, Last: last), timeout, token);
        }
        finally
        {
            _region.Exit();
        }
    }

    /// <summary>Blocks until every operation below ring position <paramref name="end"/> is terminal (or the broker is
    /// lost: then none will ever complete, and they read Failed); false on timeout. True at once for a gone channel.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="token"/> fired.</exception>
    public bool WaitCompletedThrough(long end, TimeSpan timeout, CancellationToken token)
    {
        if (!_region.TryEnter())
        {
            return true;
        }

        try
        {
            return WaitUntil(static s => s.Table.CompletedThrough >= s.End || s.Table._region.BrokerLost, (Table: this, End: end), timeout, token);
        }
        finally
        {
            _region.Exit();
        }
    }

    /// <summary>Spins, never sleeping, until every operation below ring position <paramref name="end"/> is terminal by
    /// CompletedThrough; false once <paramref name="budgetTicks"/> passed (or the broker is lost). True at once when
    /// nothing was submitted or the channel is gone (nothing of it is pending any more, as in <see cref="AnyPendingBelow"/>).
    /// The direct path of an awrite spends at most about its own staging copy's time here (docs/ARCHITECTURE.md §9.5).</summary>
    public bool SpinCompletedThrough(long end, long budgetTicks)
    {
        if (end == 0 || !_region.TryEnter())
        {
            return true;
        }

        try
        {
            long start = Stopwatch.GetTimestamp();
            var spinner = default(SpinWait);
            while (CompletedThrough < end)
            {
                if (_region.BrokerLost || Stopwatch.GetTimestamp() - start >= budgetTicks)
                {
                    return false;
                }

                spinner.SpinOnce(sleep1Threshold: -1);
            }

            return true;
        }
        finally
        {
            _region.Exit();
        }
    }

    /// <summary>Every op below this ring position is terminal (the broker's locked store after a batch's statuses).
    /// The caller holds a reference.</summary>
    private long CompletedThrough => Volatile.Read(ref _h->CompletedThrough);

    /// <summary>The completion word's current value (the completion thread compares it to see the broker moved it).
    /// The caller holds a reference.</summary>
    public int CompletionWord => Volatile.Read(ref _h->CompletionWord);

    /// <summary>Spins for the connection's spin budget, then sleeps on the completion word in slices until
    /// <paramref name="condition"/> holds (true), the timeout passes or the channel is gone (then: the condition's
    /// last value). The CAS that announces the sleep is a full fence before the condition is re-checked (the class
    /// comment has the argument). The caller holds the submission lock or a reference on the mapping.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="token"/> fired.</exception>
    public bool WaitUntil<TState>(Func<TState, bool> condition, TState state, TimeSpan timeout, CancellationToken token)
    {
        if (condition(state))
        {
            return true;
        }

        long start = Stopwatch.GetTimestamp();
        long deadline = Deadline.TicksAfter(start, timeout);
        var spinner = default(SpinWait);
        while (Stopwatch.GetTimestamp() - start < _spinTicks)
        {
            if (condition(state))
            {
                return true;
            }

            spinner.SpinOnce(sleep1Threshold: -1);
        }

        while (true)
        {
            int w = Volatile.Read(ref _h->CompletionWord);
            if ((w & 1) == 0 && Interlocked.CompareExchange(ref _h->CompletionWord, w | 1, w) != w)
            {
                continue;
            }

            w |= 1;
            if (condition(state))
            {
                return true;
            }

            token.ThrowIfCancellationRequested();
            long now = Stopwatch.GetTimestamp();
            if (now >= deadline || _region.IsGone)
            {
                return condition(state);
            }

            long leftNs = deadline == long.MaxValue ? SleepSliceNs : Math.Min(SleepSliceNs, (long)((deadline - now) * (1e9 / Stopwatch.Frequency)));
            Interop.Libc.FutexWait(&_h->CompletionWord, w, Math.Max(leftNs, 1000));
        }
    }

    /// <summary>Wakes this process's completion sleepers (a new awaiter was registered, an operation was canceled, the
    /// channel is going): moves the word so a sleeper about to FUTEX_WAIT on the old value returns at once.</summary>
    public void Nudge()
    {
        if (!_region.TryEnter())
        {
            return;
        }

        Interlocked.Add(ref _h->CompletionWord, 2);
        Interop.Libc.FutexWake(&_h->CompletionWord, int.MaxValue);
        _region.Exit();
    }

    private static void ThrowExpired(long id) =>
        throw new InvalidOperationException($"the status of operation {id} is gone: a full ring of later submissions reused its entry");
}
