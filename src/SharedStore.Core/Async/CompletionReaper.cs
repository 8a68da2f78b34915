namespace SharedStore.Async;

/// <summary>Something the completion thread finishes: an awaited ring operation, or a broker-path read.</summary>
internal interface ICompletionWaiter
{
    /// <summary>Whether its operation is terminal (no side effect).</summary>
    bool IsDone { get; }

    /// <summary>Finishes it if its operation is terminal; true then (it is dropped from the list).</summary>
    bool TryComplete();

    /// <summary>The channel is gone before the operation finished: fail or fault it.</summary>
    void Abandon();
}

/// <summary>
/// The completion thread of a channel ("sharedstore-completions"): it completes the ValueTasks of awaited ring
/// operations and finishes broker-path reads (copy out of staging, free the range). Started on the first
/// registration; one per channel. Its list of waiters is guarded by its own monitor (<c>_waiters</c>), which is also
/// what it idles on when the list is empty.
/// <para><b>No lost wake-up.</b> A registration adds under the monitor and pulses it, so an idle thread (in
/// Monitor.Wait) sees the new waiter at once; then it nudges the completion word, so a thread asleep in
/// <see cref="OpStatusTable.WaitUntil"/> returns and re-scans. Without the pulse a new awaiter waited up to the 200 ms
/// idle slice even when its operation had long finished. While waiters exist, the thread sleeps on the completion
/// word in 50 ms slices until a waiter is done or the broker moved the word (the table's Dekker argument).</para>
/// <para><b>Lifetime.</b> The thread runs while the channel is not gone and holds a reference on the mapping for
/// each pass (<see cref="ChannelRegion"/>, rule 2), since completing a broker read copies out of staging.
/// <see cref="Stop"/> wakes it, joins it (bounded), and abandons whatever is still waiting.</para>
/// </summary>
internal sealed class CompletionReaper
{
    private readonly ChannelRegion _region;
    private readonly OpStatusTable _status;
    private readonly List<ICompletionWaiter> _waiters = [];
    private Thread? _thread;

    public CompletionReaper(ChannelRegion region, OpStatusTable status)
    {
        _region = region;
        _status = status;
    }

    /// <summary>A ValueTask of the ring operation <paramref name="first"/>..<paramref name="last"/>, completed by this
    /// thread; the token cancels the operation (opcancel), it does not abandon the wait.</summary>
    /// <exception cref="ObjectDisposedException">The channel is gone.</exception>
    public ValueTask<long> Await(long first, long last, CancellationToken token)
    {
        var waiter = new RingWaiter(_status, first, last);
        Register(waiter);
        if (token.CanBeCanceled)
        {
            waiter.Registration = token.UnsafeRegister(static s => { var w = (RingWaiter)s!; w.Status.Cancel(w.First); }, waiter);
        }

        return new ValueTask<long>(waiter.Tcs.Task);
    }

    /// <summary>Adds a waiter and wakes the thread (starting it on first use).</summary>
    /// <exception cref="ObjectDisposedException">The channel is gone.</exception>
    public void Register(ICompletionWaiter waiter)
    {
        lock (_waiters)
        {
            ObjectDisposedException.ThrowIf(_region.IsGone, typeof(AsyncChannel));
            _waiters.Add(waiter);
            Monitor.Pulse(_waiters); // an idle thread waits on this monitor, not on the completion word
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "sharedstore-completions" };
                _thread.Start();
            }
        }

        _status.Nudge();
    }

    /// <summary>After the channel was marked gone (and nudged): wakes the thread, joins it for up to 5 s (never
    /// itself), and abandons every remaining waiter.</summary>
    public void Stop()
    {
        lock (_waiters)
        {
            Monitor.PulseAll(_waiters);
        }

        if (_thread is { } t && t != Thread.CurrentThread)
        {
            t.Join(TimeSpan.FromSeconds(5));
        }

        AbandonAll();
    }

    private void Run()
    {
        while (!_region.IsGone)
        {
            if (!_region.TryEnter())
            {
                break;
            }

            try
            {
                if (!Pass())
                {
                    continue;
                }

                int seen = _status.CompletionWord;
                _status.WaitUntil(static s => s.Reaper.AnyWaiterDone() || s.Reaper._status.CompletionWord >> 1 != s.Seen >> 1 || s.Reaper._region.IsGone, (Reaper: this, Seen: seen), TimeSpan.FromMilliseconds(50), default);
            }
            finally
            {
                _region.Exit();
            }
        }

        AbandonAll();
    }

    /// <summary>Completes every waiter that is done; false when none is left (after idling up to 200 ms on the
    /// monitor), true when some still wait.</summary>
    private bool Pass()
    {
        lock (_waiters)
        {
            for (int i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].TryComplete())
                {
                    _waiters.RemoveAt(i);
                }
            }

            if (_waiters.Count == 0)
            {
                Monitor.Wait(_waiters, 200);
                return false;
            }

            return true;
        }
    }

    private bool AnyWaiterDone()
    {
        lock (_waiters)
        {
            foreach (var w in _waiters)
            {
                if (w.IsDone)
                {
                    return true;
                }
            }
        }

        return false;
    }

    private void AbandonAll()
    {
        lock (_waiters)
        {
            foreach (var w in _waiters)
            {
                w.Abandon();
            }

            _waiters.Clear();
        }
    }

    /// <summary>An awaited ring operation: completes its TaskCompletionSource once its status is terminal.</summary>
    private sealed class RingWaiter(OpStatusTable status, long first, long last) : ICompletionWaiter
    {
        public OpStatusTable Status { get; } = status;

        public long First { get; } = first;

        public TaskCompletionSource<long> Tcs { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationTokenRegistration Registration { get; set; }

        public bool IsDone => Status.StatusOf(First, last).Status != AsyncStatus.InProgress;

        public bool TryComplete()
        {
            var (status, result) = Status.StatusOf(First, last);
            if (status == AsyncStatus.InProgress)
            {
                return false;
            }

            Registration.Dispose();
            ClientOperation.Complete(Tcs, status, result, last);
            return true;
        }

        public void Abandon()
        {
            Registration.Dispose();
            Tcs.TrySetException(new ObjectDisposedException("the client was disposed before the operation finished"));
        }
    }
}
