using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Queues;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>The broker's handle on one object for asynchronous operations (shared by every session's applier): its
/// view with the broker's lock slot (every lock through the object's ledger; long waits ask the broker's own check;
/// durable containers' writes mark blocks dirty) and a memory-region device over it for the device scheduler.
/// Disposed when the object is freed, which drops the view's reference on the segment's mappings.</summary>
internal sealed unsafe class AsyncTarget(ObjectView view) : IDisposable
{
    public ObjectView View { get; } = view;

    public MemoryRegionDevice Device { get; } = new((nint)view.Data, view.Size, view);

    public void Dispose()
    {
        Device.Dispose();
        View.Dispose();
    }
}

/// <summary>
/// One client's asynchronous channel on the broker side: it owns the channel memfd and a thread that consumes the
/// client's submission ring in order and applies each message through the broker's device scheduler, as requests on
/// the target object's memory-region device, under the blocks' write locks (taken with the broker's own lock slot, so
/// the client never waits for readers and a dead client's recovery cannot release a write the broker is applying).
/// <para><b>Order.</b> Messages are taken in ring order and grouped: a group is a run of consecutive messages on one
/// object whose ranges do not overlap, spanning at most <see cref="MaxGroupBlocks"/> blocks. The group's blocks are
/// write-locked in ascending order, its requests (contiguous messages merged into one scatter/gather request) are
/// scheduled together, and the next group starts only after every binding of this one was notified. Two messages with
/// overlapping ranges are never in one group, so they apply in submission order.</para>
/// <para><b>Status.</b> Each message's status word goes from pending to Applying by CAS (the client's cancel CASes the
/// same word to CancelRequested: one wins), then to Done/Failed/Canceled with the return value written first. After a
/// batch, CompletedThrough moves with a locked store and the client is woken if it sleeps; then Head moves, freeing the
/// slots (and the client's staging) for reuse.</para>
/// <para><b>Chunked writes</b> (First … Last): the First chunk write-locks the whole range and the locks are held until
/// the Last chunk applied, so such a write is excluded against readers as a whole. If the client dies in between, the
/// locks are released with the range's blocks marked torn, as for a writer killed mid-write.</para>
/// <para><b>Lifetime.</b> When the client's socket closes, the session first scrubs the dead process's lock holds,
/// then lets this thread apply everything that was published (an accepted write completes after its submitter died),
/// then releases the memberships.</para>
/// </summary>
internal sealed unsafe class AsyncApplier : IDisposable
{
    public const int MaxGroupBlocks = 64;
    private const int MaxBatch = 4096;
    private const int MaxGroupRequests = 64;
    private const int LargeBinding = 64 * 1024;
    private static readonly long SpinTicks = Stopwatch.Frequency * 50 / 1_000_000; // 50 µs: more than a futex wake here

    private readonly ClientSession _session;
    private readonly BrokerMetrics? _metrics;
    private readonly BrokerState _state;
    private readonly IDeviceAccessScheduler _scheduler;
    private readonly SafeFd _fd;
    private readonly MappedRegion _map;
    private readonly ChannelHeader* _h;
    private readonly SpscRingConsumer _ring;
    private readonly OpStatusEntry* _status;
    private readonly byte* _staging;
    private readonly long _stagingSize;
    private readonly long _slotMask;
    private readonly Dictionary<ulong, (AsyncTarget? Target, ErrorCode Error, bool CanWrite)> _targets = [];
    private readonly Lock _applyLock = new();
    private ulong _lastKey;
    private (AsyncTarget? Target, ErrorCode Error, bool CanWrite) _lastTarget;
    private readonly LockWaitPolicy _waitPolicy = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private readonly OpBinding?[] _bindings;
    private readonly List<RandomAccessRequest> _requestPool = [];
    private readonly ManualResetEventSlim _groupDone = new(false, spinCount: 200);
    private readonly WrittenSpan[] _written = new WrittenSpan[MaxGroupRequests]; // a group's requests, for its release

    // The current group.
    private readonly List<RandomAccessRequest> _group = [];
    private AsyncTarget? _groupTarget;
    private long _groupFirstBlock = long.MaxValue;
    private long _groupLastBlock = -1;
    private int _groupPending;
    private bool _holdDone; // see HoldDone

    // A chunked write in progress.
    private AsyncTarget? _multiTarget;
    private long _multiOffset;
    private long _multiLength;

    // The continuation chunks of a chunked write whose first chunk was refused or canceled get its outcome.
    private bool _skipping;
    private OpState _skipState;
    private long _skipResult;

    private volatile bool _drainAndStop;
    private bool _disposed;
    private long _processedThrough;

    public AsyncApplier(ClientSession session, BrokerState state, IDeviceAccessScheduler scheduler, int slotCount, long stagingSize, int brokerPid, BrokerMetrics? metrics = null)
    {
        _metrics = metrics;
        _session = session;
        _state = state;
        _scheduler = scheduler;
        int slotSize = ChannelDescriptor.DefaultSlotSize;
        long length = ChannelDescriptor.LengthFor(slotCount, slotSize, stagingSize);
        _fd = Memfd.Create($"sharedstore-channel-{session.Credentials.Pid}", length);
        _map = MappedRegion.Map(_fd, length, writable: true);
        Length = length;
        SlotCount = slotCount;
        StagingSize = stagingSize;

        _h = (ChannelHeader*)_map.Pointer;
        _h->Version = ChannelDescriptor.LayoutVersion;
        _h->SlotCount = slotCount;
        _h->SlotSize = slotSize;
        _h->BrokerPid = brokerPid;
        _h->StagingSize = stagingSize;
        _h->RingOffset = ChannelDescriptor.RingOffset;
        _h->StatusOffset = ChannelDescriptor.StatusOffsetFor(slotCount, slotSize);
        _h->StagingOffset = ChannelDescriptor.StagingOffsetFor(slotCount, slotSize);
        _h->ConsumerState = ChannelDescriptor.ConsumerRunning;
        SpscRingConsumer.Format(_map.Pointer + ChannelDescriptor.RingOffset, slotCount, slotSize, session.Credentials.Pid);
        _map.Populate(0, _h->StagingOffset); // header, ring, status: touched from the first message on
        Volatile.Write(ref _h->Magic, ChannelDescriptor.Magic);

        _ring = new SpscRingConsumer(_map.Pointer + ChannelDescriptor.RingOffset);
        _status = (OpStatusEntry*)(_map.Pointer + _h->StatusOffset);
        _staging = _map.Pointer + _h->StagingOffset;
        _stagingSize = stagingSize;
        _slotMask = slotCount - 1;
        _bindings = new OpBinding?[slotCount];
        _thread = new Thread(Run) { IsBackground = true, Name = $"sharedstore-apply-{session.Credentials.Pid}" };
        _thread.Start();
    }

    public SafeFd Fd => _fd;

    public long Length { get; }

    public int SlotCount { get; }

    public long StagingSize { get; }

    /// <summary>Messages published and not processed yet.</summary>
    public long Depth => Math.Max(0, Volatile.Read(ref ((RingHeader*)(_map.Pointer + ChannelDescriptor.RingOffset))->Tail) - Volatile.Read(ref _processedThrough));

    /// <summary>Messages applied (or failed, or canceled) so far.</summary>
    public long Processed => Volatile.Read(ref _processedThrough);

    // ---- Control (session thread) ------------------------------------------------------------------------

    /// <summary>Before a leave or destroy of this session: waits until every message published so far was processed
    /// and drops the cached targets, so later messages re-resolve (and fail once the object was left).</summary>
    public bool Quiesce(TimeSpan timeout)
    {
        long target = Volatile.Read(ref ((RingHeader*)(_map.Pointer + ChannelDescriptor.RingOffset))->Tail);
        var sw = Stopwatch.StartNew();
        while (Volatile.Read(ref _processedThrough) < target)
        {
            if (timeout != Timeout.InfiniteTimeSpan && sw.Elapsed > timeout || !_thread.IsAlive)
            {
                return !_thread.IsAlive;
            }

            Thread.Sleep(1);
        }

        lock (_applyLock)
        {
            _targets.Clear();
            _lastTarget = default;
        }

        return true;
    }

    /// <summary>The client is gone: apply everything it published, then stop. Returns once the thread ended.</summary>
    public void DrainAndStop()
    {
        _drainAndStop = true;
        WakeConsumer();
        _thread.Join();
    }

    /// <summary>Broker shutdown: apply what was published for up to <paramref name="grace"/>, then stop.</summary>
    public void StopForShutdown(TimeSpan grace)
    {
        _drainAndStop = true;
        WakeConsumer();
        if (!_thread.Join(grace))
        {
            _stop.Cancel();
            _thread.Join(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Stops without draining and unmaps (idempotent).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stop.Cancel();
        _drainAndStop = true;
        WakeConsumer();
        if (Thread.CurrentThread != _thread)
        {
            _thread.Join(TimeSpan.FromSeconds(10));
        }

        Volatile.Write(ref _h->ConsumerState, ChannelDescriptor.ConsumerStopped);
        _map.Dispose();
        _fd.Dispose();
    }

    /// <summary>Call after a full fence that follows the status stores the client may be waiting for.</summary>
    private void WakeClientIfWaiting()
    {
        int w = Volatile.Read(ref _h->CompletionWord);
        if ((w & 1) != 0 && Interlocked.CompareExchange(ref _h->CompletionWord, (w + 2) & ~1, w) == w)
        {
            Interop.Libc.FutexWake(&_h->CompletionWord, int.MaxValue);
        }
    }

    private void WakeConsumer()
    {
        Interlocked.Add(ref _h->Doorbell.Seq, 2);
        Interop.Libc.FutexWake(&_h->Doorbell.Seq, 1);
    }

    // ---- The applier thread --------------------------------------------------------------------------------

    private void Run()
    {
        try
        {
            long idleSince = Stopwatch.GetTimestamp();
            while (!_stop.IsCancellationRequested)
            {
                if (_ring.Available > 0)
                {
                    ProcessBatch();
                    idleSince = Stopwatch.GetTimestamp();
                    continue;
                }

                if (_drainAndStop)
                {
                    break;
                }

                if (Stopwatch.GetTimestamp() - idleSince < SpinTicks)
                {
                    Thread.SpinWait(20);
                    continue;
                }

                Doorbell.Sleep(&_h->Doorbell, this, static s => s._ring.Available > 0 || s._drainAndStop, 1_000_000_000);
                idleSince = Stopwatch.GetTimestamp();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        finally
        {
            AbandonMulti();
            Volatile.Write(ref _h->ConsumerState, ChannelDescriptor.ConsumerStopped);
        }
    }

    private void ProcessBatch()
    {
        long start = _ring.Position;
        long n = Math.Min(_ring.Available, MaxBatch);
        lock (_applyLock)
        {
            for (long p = start; p < start + n; p++)
            {
                Process(p, _ring.Peek(p));
            }

            FlushGroup();
        }

        // Completions first (locked store, then the sleeper check), then the slots.
        Interlocked.Exchange(ref _h->CompletedThrough, start + n);
        WakeClientIfWaiting();
        _ring.Release(n);
        Volatile.Write(ref _processedThrough, start + n);
        _metrics?.AsyncProcessed(n);
    }

    private void Process(long pos, ReadOnlySpan<byte> msg)
    {
        if (msg.Length < ChannelMessage.HeaderSize)
        {
            Finish(pos, OpState.Failed, -(long)ErrorCode.InvalidArgument);
            return;
        }

        ChannelMessage m = MemoryMarshal.Read<ChannelMessage>(msg);
        if (_skipping && (m.Flags & ChannelMessage.FlagFirst) == 0)
        {
            Finish(pos, _skipState, _skipResult);
            _skipping = (m.Flags & ChannelMessage.FlagLast) == 0;
            return;
        }

        _skipping = false;
        bool staged = (m.Flags & ChannelMessage.FlagStaged) != 0;
        byte* src;
        if (m.Length < 0 || m.Offset < 0)
        {
            FailMessage(pos, m, ErrorCode.InvalidArgument);
            return;
        }

        if (staged)
        {
            if ((ulong)m.StagingOffset > (ulong)_stagingSize || (ulong)m.Length > (ulong)(_stagingSize - m.StagingOffset))
            {
                FailMessage(pos, m, ErrorCode.InvalidArgument);
                return;
            }

            src = _staging + m.StagingOffset;
        }
        else
        {
            if (m.Length > msg.Length - ChannelMessage.HeaderSize || m.Kind != ChannelMessage.KindWrite)
            {
                FailMessage(pos, m, ErrorCode.InvalidArgument);
                return;
            }

            src = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(msg)) + ChannelMessage.HeaderSize;
        }

        // A chunk continuing a chunked write: the range's locks are already held.
        if (_multiTarget is not null)
        {
            ContinueMulti(pos, m, src);
            return;
        }

        if ((m.Flags & ChannelMessage.FlagFirst) == 0)
        {
            FailMessage(pos, m, ErrorCode.InvalidArgument); // a continuation without a first chunk
            return;
        }

        var (target, error, canWrite) = Resolve(m.ContainerId, m.ObjectId);
        long total = (m.Flags & ChannelMessage.FlagLast) != 0 ? m.Length : m.TotalLength;
        if (error == ErrorCode.Ok && m.Kind == ChannelMessage.KindWrite && !canWrite)
        {
            error = ErrorCode.PermissionDenied;
        }
        else if (error == ErrorCode.Ok && (m.Kind is not (ChannelMessage.KindWrite or ChannelMessage.KindRead)
            || (ulong)m.Offset > (ulong)target!.View.Size || (ulong)total > (ulong)(target.View.Size - m.Offset) || m.Length > total))
        {
            error = ErrorCode.InvalidArgument;
        }

        if (error != ErrorCode.Ok)
        {
            FailMessage(pos, m, error);
            return;
        }

        if (!TryBegin(pos))
        {
            SkipRestOf(m, OpState.Canceled, -(long)ErrorCode.Canceled);
            return;
        }

        if (m.Kind == ChannelMessage.KindRead)
        {
            FlushGroup();
            ApplyRead(pos, target!, m, src);
            return;
        }

        if ((m.Flags & ChannelMessage.FlagLast) == 0)
        {
            FlushGroup();
            BeginMulti(pos, target!, m, src, total);
            return;
        }

        AddToGroup(pos, target!, m.Offset, m.Length, src);
    }

    private void FailMessage(long pos, in ChannelMessage m, ErrorCode error)
    {
        Finish(pos, OpState.Failed, -(long)error);
        SkipRestOf(m, OpState.Failed, -(long)error);
    }

    /// <summary>A first chunk that was not applied: its continuations finish the same way, unapplied.</summary>
    private void SkipRestOf(in ChannelMessage m, OpState state, long result)
    {
        if ((m.Flags & ChannelMessage.FlagWhole) == ChannelMessage.FlagFirst && _multiTarget is null)
        {
            _skipping = true;
            _skipState = state;
            _skipResult = result;
        }
    }

    private (AsyncTarget? Target, ErrorCode Error, bool CanWrite) Resolve(uint containerId, uint objectId)
    {
        ulong key = ((ulong)containerId << 32) | objectId;
        if (key == _lastKey && _lastTarget.Target is not null)
        {
            return _lastTarget; // runs of messages on one object skip the lookup
        }

        if (!_targets.TryGetValue(key, out var t))
        {
            ErrorCode e = _state.ResolveAsync(_session, containerId, objectId, out var target, out bool canWrite);
            t = (target, e, canWrite);
            if (e == ErrorCode.Ok)
            {
                _targets[key] = t; // errors are not cached: a join may come later
            }
        }

        _lastKey = key;
        _lastTarget = t;
        return t;
    }

    /// <summary>Pending → Applying by CAS; false (and the message finished as Canceled) when the client's cancel won.</summary>
    private bool TryBegin(long pos)
    {
        OpStatusEntry* e = _status + (pos & _slotMask);
        ulong w = Volatile.Read(ref e->Word);
        if (OpStatusEntry.IsPendingFor(w, pos)
            && Interlocked.CompareExchange(ref e->Word, OpStatusEntry.Make(pos, OpState.Applying), w) == w)
        {
            return true;
        }

        Finish(pos, OpState.Canceled, -(long)ErrorCode.Canceled);
        return false;
    }

    private void Finish(long pos, OpState state, long result)
    {
        OpStatusEntry* e = _status + (pos & _slotMask);
        e->Result = result;
        Volatile.Write(ref e->Word, OpStatusEntry.Make(pos, state)); // release: Result before the terminal word
    }

    // ---- Groups --------------------------------------------------------------------------------------------

    private void AddToGroup(long pos, AsyncTarget target, long offset, int length, byte* src)
    {
        if (length == 0)
        {
            Finish(pos, OpState.Done, 0);
            return;
        }

        BlockRange blocks = target.View.Range(offset, length);
        long first = blocks.First, last = blocks.Last;
        if (_groupTarget is not null
            && (_groupTarget != target
                || Math.Max(last, _groupLastBlock) - Math.Min(first, _groupFirstBlock) >= MaxGroupBlocks
                || Overlaps(offset, length)
                || (_group.Count == MaxGroupRequests && !Extends(offset))))
        {
            FlushGroup(); // overlapping writes never share a group: they apply in submission order
        }

        if (_groupTarget is null)
        {
            _groupTarget = target;
            _groupFirstBlock = first;
            _groupLastBlock = last;
        }
        else
        {
            _groupFirstBlock = Math.Min(first, _groupFirstBlock);
            _groupLastBlock = Math.Max(last, _groupLastBlock);
        }

        OpBinding binding = Binding(pos, src, length);
        RandomAccessRequest r = Extends(offset) ? _group[^1] : NewGroupRequest(target, offset);
        r.Add(binding);
        Covered(r) += length;
    }

    private RandomAccessRequest NewGroupRequest(AsyncTarget target, long offset)
    {
        var r = Request(target.Device, RandomAccessOperation.Write, offset);
        _group.Add(r);
        return r;
    }

    /// <summary>Whether [offset, offset+length) overlaps a request of the group (touching ends do not overlap).</summary>
    private bool Overlaps(long offset, int length)
    {
        foreach (var r in _group)
        {
            if (offset < r.Offset + Covered(r) && r.Offset < offset + length)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether a write at <paramref name="offset"/> continues the group's last request back to back.</summary>
    private bool Extends(long offset) =>
        _group.Count > 0 && _group[^1].Offset + Covered(_group[^1]) == offset;

    private void FlushGroup()
    {
        if (_groupTarget is null)
        {
            return;
        }

        var range = new BlockRange(_groupTarget.View, _groupFirstBlock, _groupLastBlock);
        if (LockRange(range))
        {
            _holdDone = true; // completions wait for the version (HoldDone)
            RunRequests(_group);
            _holdDone = false;
            UnlockRange(range, _group);
            foreach (var r in _group)
            {
                foreach (OpBinding b in r.Bindings)
                {
                    FinishHeld(b);
                }
            }
        }
        else
        {
            FailRequests(_group, ErrorCode.BrokerUnavailable);
        }

        ReturnRequests(_group);
        _groupTarget = null;
        _groupFirstBlock = long.MaxValue;
        _groupLastBlock = -1;
    }

    /// <summary>Write-locks a range with the broker's slot; false (nothing held) only when the applier is stopping.</summary>
    private bool LockRange(BlockRange range)
    {
        var wait = range.View.Wait(_waitPolicy, Timeout.InfiniteTimeSpan, _stop.Token);
        if (range.AcquireWrite(ref wait) != LockStatus.Acquired)
        {
            return false;
        }

        ObjectVersion.BeginWrite(range.View, range.First, range.Last); // the range is written next (object versions, §4.1)
        return true;
    }

    /// <summary>Releases a group's range; a block one of the group's requests rewrote whole loses its torn mark.</summary>
    private void UnlockRange(BlockRange range, List<RandomAccessRequest> written)
    {
        Span<WrittenSpan> spans = _written.AsSpan(0, written.Count);
        for (int i = 0; i < spans.Length; i++)
        {
            spans[i] = new WrittenSpan(written[i].Offset, Covered(written[i]));
        }

        PublishAndRelease(range, spans);
    }

    /// <summary>The end of a write of a range locked by <see cref="LockRange"/>: publishes the object's new version
    /// while the locks are still held, releases them, then wakes version waiters (object versions, §4.1).</summary>
    private static void PublishAndRelease(BlockRange range, ReadOnlySpan<WrittenSpan> written)
    {
        long published = ObjectVersion.Publish(range.View, range.First, range.Last); // the data is in place, the locks still held
        range.ReleaseWrite(written);
        ObjectVersion.WakeIfSleepers(range.View.Locks, published);
    }

    private void RunRequests(List<RandomAccessRequest> requests)
    {
        int bindings = 0;
        foreach (var r in requests)
        {
            bindings += r.Bindings.Count;
        }

        _groupDone.Reset();
        Volatile.Write(ref _groupPending, bindings);
        foreach (var r in requests)
        {
            _scheduler.Schedule(r);
        }

        _groupDone.Wait();
    }

    private static void FailRequests(List<RandomAccessRequest> requests, ErrorCode error)
    {
        foreach (var r in requests)
        {
            foreach (OpBinding b in r.Bindings)
            {
                b.Applier.Finish(b.Position, OpState.Failed, -(long)error);
            }
        }
    }

    private RandomAccessRequest Request(IRandomAccessDevice device, RandomAccessOperation op, long offset)
    {
        RandomAccessRequest r;
        if (_requestPool.Count > 0)
        {
            r = _requestPool[^1];
            _requestPool.RemoveAt(_requestPool.Count - 1);
            r.Device = device;
            r.Operation = op;
            r.Offset = offset;
        }
        else
        {
            r = new RandomAccessRequest(device, op, offset);
        }

        // Bytes covered, kept beside the bindings for the overlap and whole-block checks (a box per pooled request,
        // not per message).
        if (r.State is StrongBox<long> covered)
        {
            covered.Value = 0;
        }
        else
        {
            r.State = new StrongBox<long>(0);
        }

        return r;
    }

    private static ref long Covered(RandomAccessRequest r) => ref ((StrongBox<long>)r.State!).Value;

    private void ReturnRequests(List<RandomAccessRequest> requests)
    {
        foreach (var r in requests)
        {
            r.Bindings.Clear();
            _requestPool.Add(r);
        }

        requests.Clear();
    }

    private OpBinding Binding(long pos, byte* src, int length)
    {
        ref OpBinding? b = ref _bindings[pos & _slotMask];
        b ??= new OpBinding(this);
        b.Reset((nint)src, length);
        b.HeldResult = -1;
        b.Position = pos;
        return b;
    }

    private void BindingDone(OpBinding b, TransferResult r)
    {
        if (r.Succeeded && Volatile.Read(ref _holdDone))
        {
            b.HeldResult = b.ResultOverride >= 0 ? b.ResultOverride : r.BytesTransferred; // finished by FinishHeld
        }
        else if (r.Succeeded)
        {
            Finish(b.Position, OpState.Done, b.ResultOverride >= 0 ? b.ResultOverride : r.BytesTransferred);
        }
        else
        {
            Finish(b.Position, OpState.Failed, -(long)DeviceException.CodeOf(r.Errno, r.Status)); // one table: OutOfRange is InvalidArgument, EIO IoError
        }

        if (b.Length >= LargeBinding && b.HeldResult < 0)
        {
            // A large staged write frees its staging when its own copy is done, not at the end of the batch: the
            // client may be waiting for exactly that space. Fence (status store before the sleeper check), then wake.
            Interlocked.MemoryBarrier();
            WakeClientIfWaiting();
        }

        if (Interlocked.Decrement(ref _groupPending) == 0)
        {
            _groupDone.Set();
        }
    }

    // ---- Completion after publication (issue 17) ------------------------------------------------------------
    //
    // HoldDone: a write's Done must not be visible before the object's version counts it, so that a client that saw
    // its awrite complete reads the new version (ObjectVersion, docs/ARCHITECTURE.md §4.1). While _holdDone is set (a
    // group's copies, the last chunk of a chunked write) a successful binding keeps its result in HeldResult instead
    // of finishing; the applier finishes it with FinishHeld after PublishAndRelease. Failures finish at once (they
    // claim no version), and so do the earlier chunks of a chunked write (their staging must free while the client
    // still submits).

    /// <summary>Finishes a binding whose Done was held for the version's publication (no-op for one that was not).</summary>
    private void FinishHeld(OpBinding b)
    {
        if (b.HeldResult < 0)
        {
            return;
        }

        Finish(b.Position, OpState.Done, b.HeldResult);
        bool large = b.Length >= LargeBinding;
        b.HeldResult = -1;
        if (large)
        {
            Interlocked.MemoryBarrier(); // status store before the sleeper check, as in BindingDone
            WakeClientIfWaiting();
        }
    }

    // ---- Reads (the broker copy path) ------------------------------------------------------------------------

    private void ApplyRead(long pos, AsyncTarget t, in ChannelMessage m, byte* dst)
    {
        if (m.Length == 0)
        {
            Finish(pos, OpState.Done, 0);
            return;
        }

        BlockRange range = t.View.Range(m.Offset, m.Length);
        var wait = t.View.Wait(_waitPolicy, Timeout.InfiniteTimeSpan, _stop.Token);
        if (range.AcquireRead(ref wait, out _) != LockStatus.Acquired)
        {
            Finish(pos, OpState.Failed, -(long)ErrorCode.BrokerUnavailable);
            return;
        }

        var req = Request(t.Device, RandomAccessOperation.Read, m.Offset).Add(Binding(pos, dst, m.Length));
        Covered(req) = m.Length;
        _group.Add(req);
        RunRequests(_group);
        ReturnRequests(_group);
        range.ReleaseRead();
    }

    // ---- Chunked writes -------------------------------------------------------------------------------------

    private void BeginMulti(long pos, AsyncTarget t, in ChannelMessage m, byte* src, long total)
    {
        if (!LockRange(t.View.Range(m.Offset, total)))
        {
            Finish(pos, OpState.Failed, -(long)ErrorCode.BrokerUnavailable); // the broker is stopping
            SkipRestOf(m, OpState.Failed, -(long)ErrorCode.BrokerUnavailable);
            return;
        }

        _multiTarget = t;
        _multiOffset = m.Offset;
        _multiLength = total;
        ApplyChunk(pos, t, m.Offset, m.Length, src, last: false);
    }

    private void ContinueMulti(long pos, in ChannelMessage m, byte* src)
    {
        AsyncTarget t = _multiTarget!;
        bool isLast = (m.Flags & ChannelMessage.FlagLast) != 0;
        bool fits = (m.Flags & ChannelMessage.FlagFirst) == 0 && m.Kind == ChannelMessage.KindWrite
            && m.Offset >= _multiOffset && m.Offset + m.Length <= _multiOffset + _multiLength;
        if (!fits)
        {
            Finish(pos, OpState.Failed, -(long)ErrorCode.InvalidArgument);
            AbandonMulti(); // a broken chunk sequence: release, marking the range torn
            return;
        }
        else
        {
            TryBeginUnconditionally(pos);
            ApplyChunk(pos, t, m.Offset, m.Length, src, isLast);
        }

        if (isLast)
        {
            // The whole range was written: the whole-block check of the release is against all of it.
            var whole = new WrittenSpan(_multiOffset, _multiLength);
            PublishAndRelease(t.View.Range(_multiOffset, _multiLength), new ReadOnlySpan<WrittenSpan>(in whole));
            FinishHeld(_bindings[pos & _slotMask]!); // the operation's Done after its version (HoldDone)
            _multiTarget = null;
        }
    }

    private void TryBeginUnconditionally(long pos)
    {
        // Later chunks of an applying write cannot be canceled alone (the first chunk's word decides for all).
        OpStatusEntry* e = _status + (pos & _slotMask);
        Volatile.Write(ref e->Word, OpStatusEntry.Make(pos, OpState.Applying));
    }

    private void ApplyChunk(long pos, AsyncTarget t, long offset, int length, byte* src, bool last)
    {
        OpBinding b = Binding(pos, src, length);
        b.ResultOverride = last ? _multiLength : -1;
        var req = Request(t.Device, RandomAccessOperation.Write, offset).Add(b);
        Covered(req) = length;
        _group.Add(req);
        _holdDone = last; // the last chunk's Done waits for the version (HoldDone)
        RunRequests(_group);
        _holdDone = false;
        ReturnRequests(_group);
        b.ResultOverride = -1;
    }

    /// <summary>The client stopped in the middle of a chunked write: release the range, marking its blocks torn.</summary>
    private void AbandonMulti()
    {
        if (_multiTarget is not { } t)
        {
            return;
        }

        t.View.Range(_multiOffset, _multiLength).ReleaseWriteTorn();
        _multiTarget = null;
    }

    private sealed class OpBinding(AsyncApplier applier) : RandomAccessRequestBinding(0, 0)
    {
        public AsyncApplier Applier { get; } = applier;

        public long Position { get; set; }

        public long ResultOverride { get; set; } = -1;

        /// <summary>A Done result held until the version is published (HoldDone); -1 when none is held.</summary>
        public long HeldResult { get; set; } = -1;

        protected internal override void OnTransferCompleted(TransferResult result) => Applier.BindingDone(this, result);
    }
}
