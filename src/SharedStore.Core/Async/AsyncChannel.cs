using System.Diagnostics;
using System.Runtime.InteropServices;
using SharedStore.Queues;
using SharedStore.Regions;

namespace SharedStore;

/// <summary>
/// This process's end of its asynchronous channel (layout: <see cref="ChannelDescriptor"/>): it produces into the
/// submission ring, allocates staging, and reads operation status from shared memory. One per client, opened on the
/// first asynchronous call. Submissions are serialized by one lock, so one process's ring is single-producer and its
/// messages keep the order of the submitting calls (the broker applies them in ring order: per-process ordering).
/// </summary>
internal sealed unsafe class AsyncChannel : IDisposable
{
    private const long SleepSliceNs = 50_000_000;

    private readonly BrokerConnection _conn;
    private readonly MappedRegion _map;
    private readonly ChannelHeader* _h;
    private readonly SpscRingProducer _ring;
    private readonly OpStatusEntry* _status;
    private readonly byte* _staging;
    private readonly long _stagingSize;
    private readonly long _slotMask;
    private readonly long _spinTicks;
    private SubmitLock _submit;

    // Staging allocation, under _submit: ranges in allocation order; the oldest is freed once its operation is
    // terminal (or its rented buffer was returned), which moves _freePos.
    private readonly Queue<StagingRange> _ranges = new();
    private long _allocPos;
    private long _freePos;

    // Awaiters, completed by the reaper thread.
    private readonly List<IWaiter> _waiters = [];
    private Thread? _reaper;
    private volatile bool _disposed;

    public AsyncChannel(BrokerConnection connection, SafeFd fd, long length)
    {
        _conn = connection;
        _map = MappedRegion.Map(fd, length, writable: true);
        _h = (ChannelHeader*)_map.Pointer;
        if (_h->Magic != ChannelDescriptor.Magic || _h->Version != ChannelDescriptor.LayoutVersion)
        {
            _map.Dispose();
            throw new SharedStoreException(ErrorCode.VersionMismatch, $"channel magic {_h->Magic:X} version {_h->Version}");
        }

        if (_h->StagingOffset + _h->StagingSize > length || _h->StatusOffset + ((long)_h->SlotCount * ChannelDescriptor.StatusEntrySize) > length)
        {
            _map.Dispose();
            throw new SharedStoreException(ErrorCode.Internal, "channel layout lies outside its memfd");
        }

        if (!Doorbell.RegisterProducerProcess())
        {
            Interlocked.Or(ref _h->Doorbell.Flags, Doorbell.ProducersFence);
        }

        _ring = new SpscRingProducer(_map.Pointer + _h->RingOffset, &_h->Doorbell);
        _status = (OpStatusEntry*)(_map.Pointer + _h->StatusOffset);
        _staging = _map.Pointer + _h->StagingOffset;
        _stagingSize = _h->StagingSize;
        _slotMask = _h->SlotCount - 1;
        _spinTicks = connection.WaitPolicy.SpinTicks;
        SlotCount = _h->SlotCount;
        InlineMax = _ring.MaxPayload - ChannelMessage.HeaderSize;
        MaxChunk = Math.Max(4096, (_stagingSize / 4) & ~63L);
        _map.Populate(0, _h->StagingOffset); // header, ring and status: touched on every submission
    }

    /// <summary>Ring slots (and status entries).</summary>
    public int SlotCount { get; }

    /// <summary>Largest write carried inside its ring slot.</summary>
    public int InlineMax { get; }

    /// <summary>Largest staged piece; larger writes go in chunks.</summary>
    public long MaxChunk { get; }

    /// <summary>Staging bytes.</summary>
    public long StagingSize => _stagingSize;

    private SharedStoreClientOptions Options => _conn.Options;

    // ---- Submission ------------------------------------------------------------------------------------

    /// <summary>Submits a write of <paramref name="data"/>; returns once the payload is in shared memory.</summary>
    public AsyncOperation SubmitWrite(SharedObject obj, long offset, ReadOnlySpan<byte> data, bool failWhenFull)
    {
        // A lost broker must be reported as documented (BrokerUnavailable, nothing submitted), not by an operation
        // published into a ring nobody consumes: while the ring had space, submissions used to succeed after the
        // broker died and only their status said Failed.
        ThrowIfUnusable();
        if (data.Length <= InlineMax)
        {
            EnterSubmit();
            try
            {
                if (!ClaimSlot(failWhenFull, out Span<byte> slot))
                {
                    return Rejected();
                }

                ref ChannelMessage m = ref MemoryMarshal.AsRef<ChannelMessage>(slot);
                m.Kind = ChannelMessage.KindWrite;
                m.Flags = ChannelMessage.FlagWhole;
                m.ContainerId = obj.Container.Id;
                m.ObjectId = obj.Id;
                m.Length = data.Length;
                m.Offset = offset;
                m.StagingOffset = 0;
                m.TotalLength = data.Length;
                data.CopyTo(slot[ChannelMessage.HeaderSize..]);
                return Publish(ChannelMessage.HeaderSize + data.Length);
            }
            finally
            {
                _submit.Exit();
            }
        }

        if (data.Length <= MaxChunk)
        {
            EnterSubmit();
            try
            {
                StagingRange? r = AllocateStaging(data.Length, failWhenFull);
                if (r is null)
                {
                    return Rejected();
                }

                data.CopyTo(new Span<byte>(_staging + r.Offset, data.Length));
                return SubmitStaged(ChannelMessage.KindWrite, obj, offset, data.Length, r, ChannelMessage.FlagWhole, data.Length, failWhenFull);
            }
            finally
            {
                _submit.Exit();
            }
        }

        return SubmitChunked(obj, offset, data, failWhenFull);
    }

    /// <summary>Zero copy: submits a write from a rented buffer; the buffer belongs to the operation afterwards.</summary>
    public AsyncOperation SubmitWrite(SharedObject obj, long offset, SharedBuffer buffer, int length, bool failWhenFull)
    {
        ThrowIfUnusable();
        EnterSubmit();
        try
        {
            StagingRange r = buffer.TakeRange(this);
            bool claimed;
            try
            {
                claimed = ClaimSlot(failWhenFull, out _);
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
            return SubmitStaged(ChannelMessage.KindWrite, obj, offset, length, r, ChannelMessage.FlagWhole, length, failWhenFull);
        }
        finally
        {
            _submit.Exit();
        }
    }

    /// <summary>The broker-copy read path: the broker fills a staging range that the returned operation copies out.</summary>
    public AsyncOperation SubmitBrokerRead(SharedObject obj, long offset, Memory<byte> buffer, bool failWhenFull)
    {
        ThrowIfUnusable();
        if (buffer.Length > MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(buffer), buffer.Length, $"the broker read path reads at most {MaxChunk} bytes per call");
        }

        EnterSubmit();
        try
        {
            StagingRange? r = AllocateStaging(buffer.Length, failWhenFull);
            if (r is null)
            {
                return Rejected();
            }

            r.State = StagingRange.Held; // freed by the reaper after it copied the data out
            AsyncOperation ring = SubmitStaged(ChannelMessage.KindRead, obj, offset, buffer.Length, r, ChannelMessage.FlagWhole, buffer.Length, failWhenFull);
            var op = new BrokerReadOperation(this, ring.Id, r, buffer);
            Register(op);
            return new AsyncOperation(op, 0, ring.Id);
        }
        finally
        {
            _submit.Exit();
        }
    }

    /// <summary>Rents <paramref name="length"/> bytes of staging for a zero-copy write.</summary>
    public SharedBuffer Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (length > MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"a rented buffer holds at most {MaxChunk} bytes (a quarter of the staging area)");
        }

        EnterSubmit();
        try
        {
            StagingRange r = AllocateStaging(length, failWhenFull: false)!;
            r.State = StagingRange.Held;
            return new SharedBuffer(this, r, _staging + r.Offset, length);
        }
        finally
        {
            _submit.Exit();
        }
    }

    private AsyncOperation SubmitStaged(byte kind, SharedObject obj, long offset, int length, StagingRange r, byte flags, long total, bool failWhenFull, bool committed = false)
    {
        if (!ClaimSlot(failWhenFull, out Span<byte> slot, committed))
        {
            Volatile.Write(ref r.State, StagingRange.Free);
            return Rejected();
        }

        ref ChannelMessage m = ref MemoryMarshal.AsRef<ChannelMessage>(slot);
        m.Kind = kind;
        m.Flags = (byte)(flags | ChannelMessage.FlagStaged);
        m.ContainerId = obj.Container.Id;
        m.ObjectId = obj.Id;
        m.Length = length;
        m.Offset = offset;
        m.StagingOffset = r.Offset;
        m.TotalLength = total;
        r.OpPosition = _ring.Position; // a Submitted range is freed once this operation is terminal

        return Publish(ChannelMessage.HeaderSize);
    }

    private AsyncOperation SubmitChunked(SharedObject obj, long offset, ReadOnlySpan<byte> data, bool failWhenFull)
    {
        // The broker holds the write locks of the whole range from the first chunk to the last, so a chunked write
        // is applied as a whole; it waits for readers there, and this call waits for staging that the broker frees
        // chunk by chunk. A lease of this process on the range would therefore wait on itself.
        obj.ThrowIfHolds(offset, data.Length);
        EnterSubmit();
        try
        {
            long first = -1, last = -1;
            long done = 0;
            while (done < data.Length)
            {
                int n = (int)Math.Min(MaxChunk, data.Length - done);
                // Only the first chunk may be refused or time out: once it is in the ring the broker holds the
                // range's locks (and may have applied it) until the last chunk, so the write is accepted and the rest
                // must follow however long staging takes to free. Giving up here left the broker waiting for chunks
                // that never came: the next message was taken for a broken continuation and failed, and the range
                // was left half written and torn, although the call had thrown "nothing submitted".
                bool committed = first >= 0;
                StagingRange? r = AllocateStaging(n, failWhenFull && !committed, committed);
                if (r is null)
                {
                    return Rejected();
                }

                data.Slice((int)done, n).CopyTo(new Span<byte>(_staging + r.Offset, n));
                byte flags = (byte)((first < 0 ? ChannelMessage.FlagFirst : 0) | (done + n == data.Length ? ChannelMessage.FlagLast : 0));
                AsyncOperation part = SubmitStaged(ChannelMessage.KindWrite, obj, offset + done, n, r, flags, data.Length, failWhenFull && !committed, committed);
                if (first < 0 && part.Status == AsyncStatus.Failed)
                {
                    return part; // refused (full): nothing was submitted
                }

                if (first < 0)
                {
                    first = part.Id;
                }

                last = part.Id;
                done += n;
            }

            return new AsyncOperation(this, first, last);
        }
        finally
        {
            _submit.Exit();
        }
    }

    /// <summary>Test hook: claims a slot and writes a whole write message into it, but neither commits nor publishes,
    /// as a producer killed between claim and commit leaves it. The submission lock stays held (the process is about
    /// to be killed).</summary>
    internal void TestClaimWithoutPublish(SharedObject obj, long offset, ReadOnlySpan<byte> data)
    {
        _submit.Enter(); // never exited: the process is about to be killed
        if (data.Length > InlineMax || !ClaimSlot(false, out Span<byte> slot))
        {
            throw new InvalidOperationException("the test hook writes one inline message");
        }

        ref ChannelMessage m = ref MemoryMarshal.AsRef<ChannelMessage>(slot);
        m.Kind = ChannelMessage.KindWrite;
        m.Flags = ChannelMessage.FlagWhole;
        m.ContainerId = obj.Container.Id;
        m.ObjectId = obj.Id;
        m.Length = data.Length;
        m.Offset = offset;
        m.TotalLength = data.Length;
        data.CopyTo(slot[ChannelMessage.HeaderSize..]);
    }

    /// <summary>Claims a ring slot, waiting up to AsyncSubmitTimeout when full (without a deadline when
    /// <paramref name="committed"/>: a continuation chunk of an accepted write).</summary>
    private bool ClaimSlot(bool failWhenFull, out Span<byte> slot, bool committed = false)
    {
        if (_ring.TryClaim(out slot))
        {
            return true;
        }

        ThrowIfUnusable();
        if (failWhenFull)
        {
            return false;
        }

        var deadline = Deadline(committed ? Timeout.InfiniteTimeSpan : Options.AsyncSubmitTimeout);
        var slice = TimeSpan.FromMilliseconds(50);
        while (!_ring.TryClaim(out slot))
        {
            ThrowIfUnusable();
            // Left() is InfiniteTimeSpan (-1 ms) without a deadline: compare only a finite one, else the default
            // infinite AsyncSubmitTimeout threw Timeout at the first full ring instead of waiting.
            TimeSpan left = Left(deadline);
            if (left != Timeout.InfiniteTimeSpan && left <= TimeSpan.Zero)
            {
                ThrowHelper.Timeout("asynchronous submission (the ring stayed full)");
            }

            // In slices, so a broker that died meanwhile is noticed.
            _ring.WaitForSpace(left == Timeout.InfiniteTimeSpan || left > slice ? slice : left, default);
        }

        return true;
    }

    private AsyncOperation Publish(int length)
    {
        long pos = _ring.Position;
        _ring.Commit(length);
        _ring.Publish();
        return new AsyncOperation(this, pos, pos);
    }

    private AsyncOperation Rejected() => new(new RejectedOperation(), 0, -1);

    // ---- Staging ----------------------------------------------------------------------------------------

    private StagingRange? AllocateStaging(int length, bool failWhenFull, bool committed = false)
    {
        long need = (length + 63) & ~63L;
        var deadline = Deadline(committed ? Timeout.InfiniteTimeSpan : Options.AsyncSubmitTimeout);
        while (true)
        {
            long off = _allocPos % _stagingSize;
            long waste = off + need > _stagingSize ? _stagingSize - off : 0;
            if (_allocPos + waste + need - _freePos <= _stagingSize)
            {
                if (waste > 0)
                {
                    _ranges.Enqueue(new StagingRange(_allocPos, waste) { State = StagingRange.Free });
                    _allocPos += waste;
                }

                var r = new StagingRange(_allocPos, need) { Offset = _allocPos % _stagingSize };
                _allocPos += need;
                _ranges.Enqueue(r);
                return r;
            }

            if (ReclaimStaging())
            {
                continue;
            }

            ThrowIfUnusable();
            if (failWhenFull)
            {
                return null;
            }

            if (!WaitUntil(static c => c.CanReclaim(), this, Left(deadline), default))
            {
                ThrowHelper.Timeout("asynchronous submission (the staging area stayed full)");
            }
        }
    }

    private bool CanReclaim() =>
        _ranges.TryPeek(out var r) && IsReclaimable(r) || _conn.Lost || _disposed;

    /// <summary>Free, or submitted and its operation is terminal: by the batch watermark, or by its own status word
    /// (the broker writes it when that binding's copy finished, before the batch ends, so large staged writes free
    /// their staging one by one).</summary>
    private bool IsReclaimable(StagingRange r)
    {
        int state = Volatile.Read(ref r.State);
        if (state != StagingRange.Submitted)
        {
            return state == StagingRange.Free;
        }

        if (r.OpPosition < Volatile.Read(ref _h->CompletedThrough))
        {
            return true;
        }

        ulong w = Volatile.Read(ref _status[r.OpPosition & _slotMask].Word);
        return OpStatusEntry.PositionOf(w) == r.OpPosition && OpStatusEntry.StateOf(w) is OpState.Done or OpState.Failed or OpState.Canceled;
    }

    private bool ReclaimStaging()
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

    // ---- Status, cancel, waits ---------------------------------------------------------------------------

    internal (AsyncStatus Status, long Result) StatusOf(long first, long last)
    {
        // The status lives in the channel's mapping; a channel disposed since (its client disposed, or its broker lost
        // and the client connected again) may be unmapped: the reference keeps it mapped for the read, and a channel
        // that is gone answers without touching it.
        if (!TryEnterMap())
        {
            return _conn.Lost ? (AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable) : throw new ObjectDisposedException(nameof(AsyncChannel));
        }

        try
        {
            return StatusOfMapped(first, last);
        }
        finally
        {
            _map.DangerousRelease();
        }
    }

    private (AsyncStatus Status, long Result) StatusOfMapped(long first, long last)
    {
        OpStatusEntry* e = _status + (last & _slotMask);
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
            ulong w1 = Volatile.Read(ref _status[first & _slotMask].Word);
            if (OpStatusEntry.PositionOf(w1) == first && OpStatusEntry.StateOf(w1) is OpState.CancelRequested or OpState.Canceled)
            {
                return (AsyncStatus.Canceled, -(long)ErrorCode.Canceled);
            }
        }

        if (_conn.Lost)
        {
            return (AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
        }

        return (AsyncStatus.InProgress, 0);
    }

    /// <summary>Cancels the operation whose first message is at <paramref name="first"/> (its word decides for every
    /// chunk).</summary>
    internal bool Cancel(long first)
    {
        if (!TryEnterMap())
        {
            return false; // the channel is gone: nothing of it can be canceled any more
        }

        try
        {
            return CancelMapped(first);
        }
        finally
        {
            _map.DangerousRelease();
        }
    }

    private bool CancelMapped(long first)
    {
        OpStatusEntry* e = _status + (first & _slotMask);
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

    internal bool WaitFor(long first, long last, TimeSpan timeout, CancellationToken token)
    {
        if (!TryEnterMap())
        {
            return true; // gone: StatusOf answers without the mapping
        }

        try
        {
            return WaitForMapped(first, last, timeout, token);
        }
        finally
        {
            _map.DangerousRelease();
        }
    }

    private bool WaitForMapped(long first, long last, TimeSpan timeout, CancellationToken token) =>
        WaitUntil(static s => s.Channel.StatusOf(s.First, s.Last).Status != AsyncStatus.InProgress, (Channel: this, First: first, Last: last), timeout, token);

    /// <summary>Whether operations submitted so far are not all terminal yet (a racy but monotonic hint).</summary>
    internal bool HasPending => Volatile.Read(ref _h->CompletedThrough) < _ring.Position;

    /// <summary>Waits until every operation submitted so far is terminal (before a leave or destroy).</summary>
    internal bool Drain(TimeSpan timeout)
    {
        long target;
        _submit.Enter();
        try
        {
            if (_disposed)
            {
                return true; // nothing of a gone channel can complete any more
            }

            target = _ring.Position;
        }
        finally
        {
            _submit.Exit();
        }

        if (!TryEnterMap())
        {
            return true;
        }

        try
        {
            return DrainMapped(target, timeout);
        }
        finally
        {
            _map.DangerousRelease();
        }
    }

    private bool DrainMapped(long target, TimeSpan timeout)
    {
        return WaitUntil(static s => Volatile.Read(ref s.Channel._h->CompletedThrough) >= s.Target || s.Channel._conn.Lost, (Channel: this, Target: target), timeout, default);
    }

    /// <summary>Spins for the client's spin budget, then sleeps on the completion word in slices (the broker clears its
    /// bit and wakes after it publishes completions). The CAS that announces the sleep is a full fence before the
    /// condition is re-checked; the broker's locked store of CompletedThrough precedes its read of the word.</summary>
    internal bool WaitUntil<TState>(Func<TState, bool> condition, TState state, TimeSpan timeout, CancellationToken token)
    {
        if (condition(state))
        {
            return true;
        }

        long start = Stopwatch.GetTimestamp();
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : start + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
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
            if (now >= deadline || _disposed)
            {
                return condition(state);
            }

            long leftNs = deadline == long.MaxValue ? SleepSliceNs : Math.Min(SleepSliceNs, (long)((deadline - now) * (1e9 / Stopwatch.Frequency)));
            Interop.Libc.FutexWait(&_h->CompletionWord, w, Math.Max(leftNs, 1000));
        }
    }

    /// <summary>Wakes this process's completion sleepers (a new awaiter was registered): moves the word so a sleeper
    /// about to FUTEX_WAIT on the old value returns at once.</summary>
    private void Nudge()
    {
        if (!TryEnterMap())
        {
            return;
        }

        Interlocked.Add(ref _h->CompletionWord, 2);
        Interop.Libc.FutexWake(&_h->CompletionWord, int.MaxValue);
        _map.DangerousRelease();
    }

    // ---- Awaiting ---------------------------------------------------------------------------------------

    internal ValueTask<long> Await(long first, long last, CancellationToken token)
    {
        var waiter = new RingWaiter(this, first, last);
        Register(waiter);
        if (token.CanBeCanceled)
        {
            waiter.Registration = token.UnsafeRegister(static s => { var w = (RingWaiter)s!; w.Channel.Cancel(w.First); }, waiter);
        }

        return new ValueTask<long>(waiter.Tcs.Task);
    }

    private void Register(IWaiter waiter)
    {
        lock (_waiters)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _waiters.Add(waiter);
            // An idle reaper waits on this monitor (not on the completion word that Nudge moves): without the pulse a
            // new awaiter waited up to its 200 ms idle slice even when its operation had long finished.
            Monitor.Pulse(_waiters);
            if (_reaper is null)
            {
                _reaper = new Thread(Reap) { IsBackground = true, Name = "sharedstore-completions" };
                _reaper.Start();
            }

        }

        Nudge();
    }

    private void Reap()
    {
        while (!_disposed)
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
                    continue;
                }
            }

            int seen = Volatile.Read(ref _h->CompletionWord);
            WaitUntil(static s => s.Channel.AnyWaiterDone() || Volatile.Read(ref s.Channel._h->CompletionWord) >> 1 != s.Seen >> 1 || s.Channel._disposed, (Channel: this, Seen: seen), TimeSpan.FromMilliseconds(50), default);
        }

        lock (_waiters)
        {
            foreach (var w in _waiters)
            {
                w.Abandon();
            }

            _waiters.Clear();
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

    // ---- Misc ----------------------------------------------------------------------------------------------

    internal void FreeRange(StagingRange r) => Volatile.Write(ref r.State, StagingRange.Free);

    internal byte* StagingPointer(StagingRange r) => _staging + r.Offset;

    /// <summary>Takes the submission lock of a usable channel: Dispose takes it too before it unmaps anything, so a
    /// submission never writes into a mapping that is going away.</summary>
    private void EnterSubmit()
    {
        _submit.Enter();
        if (_disposed)
        {
            _submit.Exit();
            ThrowIfUnusable();
        }
    }

    /// <summary>A reference on the mapping for a read or write of the header or status entries outside the submission
    /// lock (MappedRegion is a SafeHandle: munmap waits for the last reference). False once it was disposed.</summary>
    private bool TryEnterMap()
    {
        bool added = false;
        try
        {
            _map.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }

        return added;
    }

    private void ThrowIfUnusable()
    {
        if (_conn.Lost)
        {
            ThrowHelper.BrokerLost(); // first: a channel of a lost broker is disposed too when its client reconnects
        }

        ObjectDisposedException.ThrowIf(_disposed, this);
    }

    private static void ThrowExpired(long id) =>
        throw new InvalidOperationException($"the status of operation {id} is gone: a full ring of later submissions reused its entry");

    private static long Deadline(TimeSpan timeout) =>
        timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);

    private static TimeSpan Left(long deadline) =>
        deadline == long.MaxValue ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(Math.Max(0, deadline - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency);

    /// <summary>Closes the channel and unmaps it (unless rented buffers or broker reads may still point into it: then
    /// the mapping stays until the process exits). Operations of it read Failed/BrokerUnavailable (a lost broker)
    /// afterwards, or throw ObjectDisposedException (a disposed client).</summary>
    public void Dispose()
    {
        Retire();

        // The mapping stays until the process exits if rented buffers or broker reads may still point into it.
        if (_ranges.Count == 0)
        {
            _map.Dispose(); // a SafeHandle: munmap waits for readers holding a reference (TryEnterMap)
        }
    }

    /// <summary>Closes the channel but keeps its mapping: what a client does with the channel of a broker that was lost
    /// when it connects again. Submissions fail, waiters are released, the completion thread ends; the status words
    /// stay readable, so an operation that completed before the broker died still says Completed (the others read
    /// Failed/BrokerUnavailable). The mapping goes with the client (<see cref="Dispose"/>).</summary>
    public void Retire()
    {
        if (_disposed)
        {
            return;
        }

        // Under the submission lock: a submission in progress finishes first, and every later one sees _disposed.
        _submit.Enter();
        _disposed = true;
        _submit.Exit();
        Nudge();
        lock (_waiters)
        {
            Monitor.PulseAll(_waiters);
        }

        if (_reaper is { } t && t != Thread.CurrentThread)
        {
            t.Join(TimeSpan.FromSeconds(5));
        }

        lock (_waiters)
        {
            foreach (var w in _waiters)
            {
                w.Abandon();
            }

            _waiters.Clear();
        }
    }

    private interface IWaiter
    {
        bool IsDone { get; }

        bool TryComplete();

        void Abandon();
    }

    private sealed class RingWaiter(AsyncChannel channel, long first, long last) : IWaiter
    {
        public AsyncChannel Channel { get; } = channel;

        public long First { get; } = first;

        public long Last { get; } = last;

        public TaskCompletionSource<long> Tcs { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationTokenRegistration Registration { get; set; }

        public bool IsDone => Channel.StatusOf(First, Last).Status != AsyncStatus.InProgress;

        public bool TryComplete()
        {
            var (status, result) = Channel.StatusOf(First, Last);
            if (status == AsyncStatus.InProgress)
            {
                return false;
            }

            Registration.Dispose();
            ClientOperation.Complete(Tcs, status, result, Last);
            return true;
        }

        public void Abandon()
        {
            Registration.Dispose();
            Tcs.TrySetException(new ObjectDisposedException("the client was disposed before the operation finished"));
        }
    }

    /// <summary>A broker-path read: done once the broker filled staging and the reaper copied it out.</summary>
    private sealed class BrokerReadOperation(AsyncChannel channel, long position, StagingRange range, Memory<byte> buffer) : ClientOperation, IWaiter
    {
        public override long Id => position;

        public bool IsDone => channel.StatusOf(position, position).Status != AsyncStatus.InProgress;

        public override bool Cancel()
        {
            bool canceled = channel.Cancel(position);
            if (canceled)
            {
                channel.Nudge();
            }

            return canceled;
        }

        public bool TryComplete()
        {
            var (status, result) = channel.StatusOf(position, position);
            if (status == AsyncStatus.InProgress)
            {
                return false;
            }

            if (status == AsyncStatus.Completed)
            {
                new ReadOnlySpan<byte>(channel.StagingPointer(range), (int)result).CopyTo(buffer.Span);
            }

            channel.FreeRange(range);
            Finish(status, result);
            return true;
        }

        public void Abandon() => Finish(AsyncStatus.Failed, -(long)ErrorCode.BrokerUnavailable);
    }
}

/// <summary>
/// The submission lock: one CAS to enter and a release store to exit when uncontended (System.Threading.Lock pays a
/// locked instruction on both). Holders may wait inside (for ring or staging space), so a contender spins briefly and
/// then yields and sleeps instead of burning its core.
/// </summary>
internal struct SubmitLock
{
    private int _held;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        if (Interlocked.CompareExchange(ref _held, 1, 0) != 0)
        {
            EnterSlow();
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Exit() => Volatile.Write(ref _held, 0);

    private void EnterSlow()
    {
        var spinner = default(SpinWait);
        while (Volatile.Read(ref _held) != 0 || Interlocked.CompareExchange(ref _held, 1, 0) != 0)
        {
            spinner.SpinOnce(); // spins, then yields, then sleeps 1 ms now and then
        }
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

    public long OpPosition;
    public int State = Submitted;

}

/// <summary>An operation refused at submission because the ring or staging was full (AsyncFullMode.Fail).</summary>
internal sealed class RejectedOperation : ClientOperation
{
    public RejectedOperation() => Finish(AsyncStatus.Failed, -(long)ErrorCode.Busy);

    public override long Id => -1;

    public override bool Cancel() => false;
}
