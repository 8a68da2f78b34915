using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Versioning;
using static SharedStore.Interop.IoUring;

namespace SharedStore.Devices;

/// <summary>
/// A truly asynchronous scheduler on io_uring, driven by raw system calls (no liburing). Each binding becomes one
/// IORING_OP_READ or IORING_OP_WRITE; one dedicated completion thread reaps completions and runs notifications.
/// </summary>
/// <remarks>
/// <para><b>Submission.</b> Only the completion thread calls io_uring_enter. <see cref="Schedule"/> fills SQEs under
/// one lock from any thread and, if the completion thread is asleep in io_uring_enter, wakes it through an eventfd
/// that the ring itself polls (IORING_OP_POLL_ADD). The completion thread's next io_uring_enter submits everything
/// published since the last one and waits for completions in the same call, so a QD32 loop costs one system call
/// per batch of completions, as fio's io_uring engine does. One issuing thread is what lets the ring use
/// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (kernel 6.1+; fio sets the same flags): completions are
/// then run in the completion thread's own io_uring_enter instead of interrupting whichever thread submitted. With
/// the flags, this scheduler measured 0.86x of fio's IOPS without them and parity with them (docs/DEVICES.md). On
/// older kernels the ring is created without them and behaves the same, a little slower.</para>
/// <para><b>Capacity.</b> At most as many kernel operations as the completion queue holds are outstanding, so the
/// CQ cannot overflow (the kernel would buffer with IORING_FEAT_NODROP, at a cost). Bindings beyond that wait in an
/// overflow queue that the completion thread drains as completions free capacity.</para>
/// <para><b>Devices without a descriptor</b> (null and memory-region devices) and bindings that failed validation
/// are submitted as IORING_OP_NOP; the copy or the error report then happens on the completion thread, so every
/// notification of this scheduler runs on that one thread.</para>
/// <para><b>Short transfers.</b> A short WRITE is resubmitted for the remainder; a short READ is end of file and
/// reported as is (resubmitting would also break direct I/O alignment).</para>
/// <para><b>Cancellation</b> uses IORING_OP_ASYNC_CANCEL on the binding's user_data; the kernel may still complete
/// a read that already reached the device, in which case the binding reports success.</para>
/// </remarks>
[SupportedOSPlatform("linux")]
public sealed unsafe partial class IoUringScheduler : IDeviceAccessScheduler
{
    // user_data layout: bits 63..56 tag, 55..32 slot generation, 31..0 slot index.
    private const ulong TagMask = 0xFFUL << 56;
    private const ulong TagBinding = 0;
    private const ulong TagCancel = 1UL << 56;
    private const ulong TagWake = 2UL << 56;

    private static readonly TimeSpan s_shutdownWait = TimeSpan.FromSeconds(30);

    // Completion batching: when it must wait, the completion thread asks the kernel for a quarter of the operations
    // in flight (at most 64) or 100 us, whichever comes first, instead of waking for every completion. Measured on
    // 4 KiB random reads at QD32 (ratio to fio in the same run): waking per completion 0.84 to 0.95 (mean 0.89 over
    // 6 runs), a quarter with 100 us 0.94 to 1.07 (mean 0.99 over 5 runs); an eighth, a half, 50 us and 200 us were
    // no better than per completion. Fewer wake-ups matter on this shared 2-CPU machine, where every wake-up waits
    // for a CPU. Polling before sleeping (50 and 200 us) was worse than either: it burns the CPU the disk
    // interrupts need. The timeout bounds the extra latency a lone completion can see.
    //
    // The batch is also capped by the completions expected within the wait (adaptive batching, issue 19): with
    // completions further apart than the wait, a batch of two never fills, every wait ends at the timeout, and each
    // finished operation's slot idles for the whole 100 us before it is reused. 1 MiB O_DIRECT writes at QD8 finish
    // about every 300 us here, so the fixed quarter-batch cost them a slot for 100 us of every ~2.5 ms. The gap
    // between completions is an average over the last reaps (8-sample EWMA); 4 KiB reads at QD32 (a completion every
    // 15-20 us) keep their batch of about 6 to 8.
    private const int CompletionBatchDivisor = 4;
    private const int CompletionBatchMax = 64;
    private const long CompletionBatchWaitNs = 100_000; // 100 us
    private const uint IORING_FEAT_EXT_ARG = 1U << 8;

    [ThreadStatic]
    private static IoUringScheduler? t_owner;

    private readonly object _lock = new();
    private readonly int _ringFd;
    private readonly byte* _sqRing;
    private readonly nuint _sqRingSize;
    private readonly byte* _cqRing;
    private readonly nuint _cqRingSize;
    private readonly io_uring_sqe* _sqes;
    private readonly nuint _sqesSize;
    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint _sqMask;
    private readonly uint _sqEntries;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly io_uring_cqe* _cqes;

    // Guarded by _lock.
    private readonly RandomAccessRequestBinding?[] _slots;
    private readonly uint[] _generations;
    private readonly int[] _freeSlots;
    private readonly Queue<RandomAccessRequestBinding> _overflow = new();
    private int _freeTop;
    private uint _sqLocalTail;
    private uint _unsubmitted;
    private int _kernelOps;
    private readonly List<ulong> _pendingCancels = [];
    private bool _stopping;
    private bool _cancelAllIssued;
    private bool _sleeping;
    private bool _closed;

    // Owned by the completion thread.
    private readonly Completion[] _batch;
    private long _completionGapNs; // EWMA of the time between completions; 0 = no estimate yet
    private long _lastReapTimestamp;

    private readonly Thread _reaper;
    private readonly int _eventFd;
    private readonly bool _needsEnable;
    private readonly ManualResetEventSlim _started = new();
    private int _startErrno;
    private bool _rearmPoll;
    private readonly bool _extArg;
    private int _disposed;
    private int _inFlight;
    private int _faults;

    private struct Completion
    {
        public RandomAccessRequestBinding? Binding;
        public int Result;
        public int Slot;
    }

    /// <summary>Creates a ring with <paramref name="entries"/> submission entries and four times as many completion
    /// entries, and starts its completion thread.</summary>
    /// <param name="entries">Submission queue size (rounded up to a power of two by the kernel).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="entries"/> is not between 1 and 4096.</exception>
    /// <exception cref="DeviceException">io_uring is unavailable (ENOSYS, EPERM under seccomp or
    /// io_uring_disabled) or the ring could not be mapped.</exception>
    public IoUringScheduler(int entries = 256)
    {
        if (entries is < 1 or > 4096)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(entries), entries, "Between 1 and 4096 entries.");
        }

        io_uring_params p = default;

        // R_DISABLED: the ring's single issuer becomes the thread that enables it, i.e. the completion thread.
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_R_DISABLED |
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        p.cq_entries = (uint)entries * 4;
        int fd = Setup((uint)entries, &p);
        if (fd == -Interop.Libc.EINVAL)
        {
            // Kernels before 6.1 lack SINGLE_ISSUER/DEFER_TASKRUN; the design works without them.
            p = default;
            p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
            p.cq_entries = (uint)entries * 4;
            fd = Setup((uint)entries, &p);
        }

        if (fd < 0)
        {
            DeviceThrowHelper.ThrowSyscall("io_uring_setup", null, -fd);
        }

        _ringFd = fd;
        _needsEnable = (p.flags & IORING_SETUP_R_DISABLED) != 0;
        _extArg = (p.features & IORING_FEAT_EXT_ARG) != 0;
        DeferTaskRun = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
        try
        {
            _sqRingSize = p.sq_off.array + p.sq_entries * sizeof(uint);
            _cqRingSize = p.cq_off.cqes + p.cq_entries * (uint)sizeof(io_uring_cqe);
            bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
            if (single)
            {
                _sqRingSize = _cqRingSize = Math.Max(_sqRingSize, _cqRingSize);
            }

            _sqRing = Map(fd, _sqRingSize, IORING_OFF_SQ_RING);
            _cqRing = single ? _sqRing : Map(fd, _cqRingSize, IORING_OFF_CQ_RING);
            _sqesSize = p.sq_entries * (uint)sizeof(io_uring_sqe);
            _sqes = (io_uring_sqe*)Map(fd, _sqesSize, IORING_OFF_SQES);
        }
        catch
        {
            Unmap();
            Interop.Libc.close(fd);
            throw;
        }

        _sqHead = (uint*)(_sqRing + p.sq_off.head);
        _sqTail = (uint*)(_sqRing + p.sq_off.tail);
        _sqMask = *(uint*)(_sqRing + p.sq_off.ring_mask);
        _sqEntries = *(uint*)(_sqRing + p.sq_off.ring_entries);
        _cqHead = (uint*)(_cqRing + p.cq_off.head);
        _cqTail = (uint*)(_cqRing + p.cq_off.tail);
        _cqMask = *(uint*)(_cqRing + p.cq_off.ring_mask);
        _cqes = (io_uring_cqe*)(_cqRing + p.cq_off.cqes);

        // Identity SQ index array: SQEs are always filled in ring order, so entry i always names SQE i.
        uint* array = (uint*)(_sqRing + p.sq_off.array);
        for (uint i = 0; i < _sqEntries; i++)
        {
            array[i] = i;
        }

        _sqLocalTail = *_sqTail;
        SubmissionEntries = (int)p.sq_entries;
        CompletionEntries = (int)p.cq_entries;

        // Leave room in the CQ for cancel and wake-up completions, which do not take a slot.
        int slots = (int)p.cq_entries - (int)p.sq_entries;
        _slots = new RandomAccessRequestBinding?[slots];
        _generations = new uint[slots];
        _freeSlots = new int[slots];
        for (int i = 0; i < slots; i++)
        {
            _freeSlots[i] = slots - 1 - i;
        }

        _freeTop = slots;
        _batch = new Completion[p.cq_entries];
        SelectionReason = $"io_uring with {p.sq_entries} SQ / {p.cq_entries} CQ entries (constructed directly)";
        _eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (_eventFd < 0)
        {
            int errno = Interop.Libc.LastErrno;
            Unmap();
            Interop.Libc.close(fd);
            DeviceThrowHelper.ThrowSyscall("eventfd", null, errno);
        }

        _reaper = new Thread(ReaperLoop) { IsBackground = true, Name = "sharedstore-uring-reaper" };
        _reaper.UnsafeStart();
        _started.Wait();
        if (_startErrno != 0)
        {
            _reaper.Join();
            Unmap();
            Interop.Libc.close(_eventFd);
            Interop.Libc.close(fd);
            DeviceThrowHelper.ThrowSyscall("io_uring_register(IORING_REGISTER_ENABLE_RINGS)", null, _startErrno);
        }
    }

    /// <summary>True when the ring runs with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN.</summary>
    public bool DeferTaskRun { get; }

    /// <summary>Submission queue entries granted by the kernel.</summary>
    public int SubmissionEntries { get; }

    /// <summary>Completion queue entries granted by the kernel.</summary>
    public int CompletionEntries { get; }

    /// <inheritdoc/>
    public DeviceSchedulerKind Kind => DeviceSchedulerKind.IoUring;

    /// <inheritdoc/>
    public string SelectionReason { get; internal set; }

    /// <inheritdoc/>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <inheritdoc/>
    public int NotificationFaults => Volatile.Read(ref _faults);

    /// <summary>Probes whether io_uring can be used here: /proc/sys/kernel/io_uring_disabled and a real
    /// io_uring_setup. Returns null when it can, else the reason it cannot.</summary>
    /// <returns>Null, or a sentence naming the cause.</returns>
    public static string? ProbeUnavailableReason()
    {
        try
        {
            string disabled = File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim();
            if (disabled == "2")
            {
                return "io_uring is disabled system-wide (/proc/sys/kernel/io_uring_disabled = 2)";
            }
        }
        catch (IOException)
        {
            // Older kernels lack the knob; the setup call below decides.
        }
        catch (UnauthorizedAccessException)
        {
        }

        io_uring_params p = default;
        int fd = Setup(2, &p);
        if (fd < 0)
        {
            int errno = -fd;
            string why = errno switch
            {
                Interop.Libc.ENOSYS => "the kernel has no io_uring (ENOSYS)",
                Interop.Libc.EPERM => "io_uring_setup is not permitted (EPERM: seccomp filter or io_uring_disabled = 1 without the io_uring group)",
                _ => $"io_uring_setup failed: {Interop.Libc.StrError(errno)} (errno {errno})",
            };
            return why;
        }

        Interop.Libc.close(fd);
        return null;
    }

    /// <inheritdoc/>
    public void Schedule(RandomAccessRequest request)
    {
        RandomAccessDevice device = SchedulerCommon.CheckRequest(request);
        bool onReaper = t_owner == this;
        lock (_lock)
        {
            // Checked under the lock: after _stopping only the completion thread may add work, and the ring is
            // unmapped only after that thread has exited, so no other thread can publish into a dead ring.
            if (_stopping && !onReaper)
            {
                DeviceThrowHelper.ThrowObjectDisposed(this);
            }

            int count = SchedulerCommon.BeginBindings(this, request, device);
            Interlocked.Add(ref _inFlight, count);
            List<RandomAccessRequestBinding> bindings = request.Bindings;
            for (int i = 0; i < bindings.Count; i++)
            {
                RandomAccessRequestBinding b = bindings[i];
                if (_stopping)
                {
                    b.TryRequestCancel();
                }

                if (_overflow.Count > 0 || !TryPrepare(b))
                {
                    _overflow.Enqueue(b);
                }
            }

            if (!onReaper)
            {
                WakeLocked();
            }
        }
    }

    /// <inheritdoc/>
    public void Cancel(RandomAccessRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }

            foreach (RandomAccessRequestBinding b in request.Bindings)
            {
                if (b.Request != request)
                {
                    continue;
                }

                // Queued (overflow or NOP not yet reaped): the completion path sees the flag and reports Cancelled.
                if (b.TryRequestCancel())
                {
                    continue;
                }

                if (b.CurrentState == RandomAccessRequestBinding.StateRunning && !b.IsNop && b.UserData != 0)
                {
                    // Published by the completion thread, the ring's only issuer.
                    _pendingCancels.Add(b.UserData);
                }
            }

            if (t_owner != this)
            {
                WakeLocked();
            }
        }
    }

    /// <inheritdoc/>
    public void RegisterDevice(IRandomAccessDevice device)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            DeviceThrowHelper.ThrowObjectDisposed(this);
        }

        SchedulerCommon.Register(this, device);
    }

    /// <inheritdoc/>
    public bool UnregisterDevice(IRandomAccessDevice device, TimeSpan timeout)
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A device cannot be unregistered from its scheduler's own completion thread (it would wait for itself).");
        }

        return SchedulerCommon.Unregister(this, device, timeout);
    }

    /// <summary>
    /// Stops the scheduler: cancels every outstanding operation (IORING_ASYNC_CANCEL_ANY), lets the completion thread
    /// notify every binding once (cancelled or completed), then unmaps the ring. Waits at most 30 s; if operations
    /// are still outstanding then, the ring is deliberately leaked rather than unmapped under the kernel. Idempotent.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from a notification handler of this scheduler.</exception>
    public void Dispose()
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A scheduler cannot be disposed from its own completion thread.");
        }

        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        lock (_lock)
        {
            // The completion thread sees _stopping, publishes IORING_ASYNC_CANCEL_ANY and exits once drained.
            _stopping = true;
            foreach (RandomAccessRequestBinding b in _overflow)
            {
                b.TryRequestCancel();
            }

            WakeLocked();
        }

        if (_reaper.Join(s_shutdownWait))
        {
            lock (_lock)
            {
                _closed = true;
                Unmap();
                Interop.Libc.close(_eventFd);
                Interop.Libc.close(_ringFd);
            }
        }
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        if (t_owner == this)
        {
            DeviceThrowHelper.ThrowInvalidOperation("A scheduler cannot be disposed from its own completion thread.");
        }

        return Volatile.Read(ref _disposed) != 0 ? default : new ValueTask(Task.Run(Dispose));
    }

    private static byte* Map(int fd, nuint size, long offset)
    {
        nint addr = Interop.Libc.mmap(0, size, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE,
            Interop.Libc.MAP_SHARED | Interop.Libc.MAP_POPULATE, fd, offset);
        if (addr == Interop.Libc.MAP_FAILED)
        {
            DeviceThrowHelper.ThrowSyscall("mmap(io_uring)", null, Interop.Libc.LastErrno);
        }

        return (byte*)addr;
    }

    private void Unmap()
    {
        if (_sqes != null)
        {
            Interop.Libc.munmap((nint)_sqes, _sqesSize);
        }

        if (_cqRing != null && _cqRing != _sqRing)
        {
            Interop.Libc.munmap((nint)_cqRing, _cqRingSize);
        }

        if (_sqRing != null)
        {
            Interop.Libc.munmap((nint)_sqRing, _sqRingSize);
        }
    }

    /// <summary>A zeroed SQE at the local tail, or null when the SQ is full (after submitting, on the completion
    /// thread; other threads leave the binding to the overflow queue).</summary>
    private io_uring_sqe* NextSqeLocked()
    {
        // Volatile: the kernel advances the SQ head when it consumes entries; a stale value only makes us think the
        // ring is fuller than it is.
        if (_sqLocalTail - Volatile.Read(ref *_sqHead) >= _sqEntries)
        {
            if (t_owner != this)
            {
                return null;
            }

            SubmitLocked();
            if (_sqLocalTail - Volatile.Read(ref *_sqHead) >= _sqEntries)
            {
                return null;
            }
        }

        io_uring_sqe* sqe = &_sqes[_sqLocalTail & _sqMask];
        *sqe = default;
        return sqe;
    }

    private void PublishLocked(bool countsAsOp = true)
    {
        _sqLocalTail++;

        // Volatile (release): the SQE contents must be visible to the kernel before the tail that exposes them.
        Volatile.Write(ref *_sqTail, _sqLocalTail);
        _unsubmitted++;
        if (countsAsOp)
        {
            _kernelOps++;
        }
    }

    /// <summary>Submits published SQEs without waiting. Completion thread only (it is the ring's single issuer).</summary>
    private void SubmitLocked()
    {
        if (_unsubmitted == 0)
        {
            return;
        }

        int r = Enter(_ringFd, _unsubmitted, 0, 0);
        if (r > 0)
        {
            _unsubmitted -= (uint)r;
        }

        // EAGAIN/EBUSY: the kernel is short of resources or completions are backed up; the next pass retries.
    }

    /// <summary>Wakes the completion thread if it is (about to be) asleep in io_uring_enter.</summary>
    private void WakeLocked()
    {
        // _sleeping is set under this lock in the same critical section in which the completion thread took its
        // snapshot of _unsubmitted, so work published after the snapshot always sees _sleeping and signals: no lost
        // wake-up. One signal per sleep is enough, hence the reset.
        if (_sleeping)
        {
            _sleeping = false;
            EventFdSignal(_eventFd);
        }
    }

    /// <summary>Publishes the one-shot poll on the eventfd that lets other threads wake the completion thread.</summary>
    private void ArmPollLocked()
    {
        io_uring_sqe* sqe = NextSqeLocked();
        if (sqe == null)
        {
            _rearmPoll = true;
            return;
        }

        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->fd = _eventFd;
        sqe->rw_flags = POLLIN;
        sqe->user_data = TagWake;
        PublishLocked(countsAsOp: false);
        _rearmPoll = false;
    }

    /// <summary>Publishes cancellations requested by other threads, and the cancel-everything of shutdown.</summary>
    private void PublishCancelsLocked()
    {
        if (_stopping && !_cancelAllIssued)
        {
            io_uring_sqe* sqe = NextSqeLocked();
            if (sqe != null)
            {
                sqe->opcode = IORING_OP_ASYNC_CANCEL;
                sqe->fd = -1;
                sqe->rw_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
                sqe->user_data = TagCancel;
                PublishLocked();
                _cancelAllIssued = true;
            }
        }

        int done = 0;
        for (; done < _pendingCancels.Count; done++)
        {
            io_uring_sqe* sqe = NextSqeLocked();
            if (sqe == null)
            {
                break;
            }

            sqe->opcode = IORING_OP_ASYNC_CANCEL;
            sqe->fd = -1;
            sqe->addr = _pendingCancels[done];
            sqe->user_data = TagCancel;
            PublishLocked();
        }

        _pendingCancels.RemoveRange(0, done);
    }

    /// <summary>Puts one binding in the SQ (real I/O, continuation, or NOP). False when no slot or SQ entry is free.</summary>
    private bool TryPrepare(RandomAccessRequestBinding b)
    {
        if (_freeTop == 0)
        {
            return false;
        }

        io_uring_sqe* sqe = NextSqeLocked();
        if (sqe == null)
        {
            return false;
        }

        RandomAccessRequest request = b.Request!;
        var device = (RandomAccessDevice)request.Device;
        bool real;
        if (b.CurrentState == RandomAccessRequestBinding.StateRunning)
        {
            real = true; // continuation of a short write
        }
        else
        {
            real = false;
            SafeFd? fh = device.FileHandle;
            if (fh != null && b.PreStatus == TransferStatus.Success && b.CurrentState == RandomAccessRequestBinding.StateQueued)
            {
                bool added = false;
                try
                {
                    // AddRef until the final completion: the fd number must stay valid until io_uring_enter has
                    // consumed the SQE, and a continuation reuses it.
                    fh.DangerousAddRef(ref added);
                }
                catch (ObjectDisposedException)
                {
                    b.PreStatus = TransferStatus.DeviceClosed;
                }

                if (added)
                {
                    if (b.TryStart())
                    {
                        real = true;
                        b.HoldsFdRef = true;
                    }
                    else
                    {
                        fh.DangerousRelease();
                    }
                }
            }
        }

        int slot = _freeSlots[--_freeTop];
        uint gen = ++_generations[slot] & 0xFFFFFF;
        ulong userData = TagBinding | ((ulong)gen << 32) | (uint)slot;
        _slots[slot] = b;
        b.UserData = userData;
        b.IsNop = !real;
        if (real)
        {
            int done = b.Progress;
            sqe->opcode = request.Operation == RandomAccessOperation.Read ? IORING_OP_READ : IORING_OP_WRITE;
            sqe->fd = device.FileHandle!.Fd;
            sqe->off = (ulong)(b.DeviceOffset + done);
            sqe->addr = (ulong)(b.Address + done);
            sqe->len = (uint)(b.Length - done);
        }
        else
        {
            sqe->opcode = IORING_OP_NOP;
        }

        sqe->user_data = userData;
        PublishLocked();
        return true;
    }

    // AggressiveOptimization: this method is entered once and loops for the scheduler's life, so tiered compilation
    // could only reach it through on-stack replacement; compile it fully optimized from the start.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ReaperLoop()
    {
        t_owner = this;
        if (_needsEnable)
        {
            int r = Register(_ringFd, IORING_REGISTER_ENABLE_RINGS, null, 0);
            if (r < 0)
            {
                _startErrno = -r;
                _started.Set();
                return;
            }
        }

        lock (_lock)
        {
            ArmPollLocked();
        }

        _started.Set();
        while (true)
        {
            uint toSubmit;
            bool wait;
            int kernelOps;
            lock (_lock)
            {
                if (_rearmPoll && !_stopping)
                {
                    ArmPollLocked();
                }

                PublishCancelsLocked();
                while (_overflow.Count > 0 && TryPrepare(_overflow.Peek()))
                {
                    _overflow.Dequeue();
                }

                if (_stopping && _kernelOps == 0 && _overflow.Count == 0)
                {
                    return;
                }

                toSubmit = _unsubmitted;
                kernelOps = _kernelOps;

                // Volatile (acquire): pairs with the kernel's release of the CQ tail.
                wait = Volatile.Read(ref *_cqTail) == *_cqHead;
                _sleeping = wait;
            }

            int n;
            uint batch = wait && _extArg ? CompletionBatch(kernelOps) : 1;
            if (batch > 1)
            {
                n = EnterTimeout(_ringFd, toSubmit, batch, IORING_ENTER_GETEVENTS, CompletionBatchWaitNs);
                if (n == -ETIME)
                {
                    n = 0; // fewer than `batch` completions within the wait: reap what there is
                }
            }
            else
            {
                // GETEVENTS even when not waiting: with DEFER_TASKRUN completions are only posted inside this call.
                n = Enter(_ringFd, toSubmit, wait ? 1u : 0u, IORING_ENTER_GETEVENTS);
            }

            lock (_lock)
            {
                _sleeping = false;
                if (n > 0)
                {
                    _unsubmitted -= (uint)n;
                }
            }

            if (n < 0 && n != -Interop.Libc.EAGAIN && n != -16 /* EBUSY */ && n != -Interop.Libc.ETIMEDOUT)
            {
                // Unexpected; back off instead of spinning, completions are still reaped below.
                Thread.Sleep(1);
            }

            int reaped = Reap();
            MeasureCompletionGap(reaped, kernelOps);
            Dispatch(reaped);
        }
    }

    /// <summary>How many completions to wait for, with <paramref name="kernelOps"/> in flight (see the constants).</summary>
    private uint CompletionBatch(int kernelOps)
    {
        int byDepth = Math.Clamp(kernelOps / CompletionBatchDivisor, 1, CompletionBatchMax);
        if (Batching == CompletionBatching.Fixed || _completionGapNs <= 0)
        {
            return (uint)byDepth;
        }

        if (Batching == CompletionBatching.None)
        {
            return 1;
        }

        // Completions expected within the wait; a gap as long as the wait allows none beyond the first.
        long expected = 1 + ((CompletionBatchWaitNs - 1) / _completionGapNs);
        return (uint)Math.Min(byDepth, expected);
    }

    /// <summary>Updates the completion gap estimate after a reap of <paramref name="reaped"/> completions.</summary>
    private void MeasureCompletionGap(int reaped, int kernelOpsBefore)
    {
        if (reaped == 0)
        {
            return;
        }

        long now = Stopwatch.GetTimestamp();
        if (_lastReapTimestamp != 0 && kernelOpsBefore > 0)
        {
            // Capped: the first completion after an idle spell says nothing about the gap while busy, and an
            // uncapped sample of seconds would keep the batch at one for hundreds of reaps.
            long sample = Math.Min((long)Stopwatch.GetElapsedTime(_lastReapTimestamp, now).TotalNanoseconds / reaped, 10 * CompletionBatchWaitNs);
            _completionGapNs = _completionGapNs <= 0 ? sample : _completionGapNs + ((sample - _completionGapNs) / 8);
        }

        _lastReapTimestamp = now;
    }

    /// <summary>Copies ready CQEs into the batch and releases their CQ entries; frees their slots.</summary>
    private int Reap()
    {
        uint head = *_cqHead;
        uint tail = Volatile.Read(ref *_cqTail);
        int n = 0;
        int kernelOps = 0;
        while (head != tail)
        {
            io_uring_cqe* cqe = &_cqes[head & _cqMask];
            ulong userData = cqe->user_data;
            head++;
            if ((userData & TagMask) == TagWake)
            {
                // The eventfd poll fired (or was cancelled at shutdown): reset the counter and poll again.
                EventFdDrain(_eventFd);
                _rearmPoll = true;
                continue;
            }

            kernelOps++;
            if ((userData & TagMask) != TagBinding)
            {
                continue;
            }

            int slot = (int)(uint)userData;
            ref Completion c = ref _batch[n++];
            c.Binding = _slots[slot];
            c.Result = cqe->res;
            c.Slot = slot;
        }

        // Volatile (release): the kernel may reuse these CQ entries once it sees the new head.
        Volatile.Write(ref *_cqHead, head);
        if (kernelOps > 0 || n > 0)
        {
            lock (_lock)
            {
                _kernelOps -= kernelOps;
                for (int i = 0; i < n; i++)
                {
                    _slots[_batch[i].Slot] = null;
                    _freeSlots[_freeTop++] = _batch[i].Slot;
                }
            }
        }

        return n;
    }

    private void Dispatch(int n)
    {
        for (int i = 0; i < n; i++)
        {
            ref Completion c = ref _batch[i];
            RandomAccessRequestBinding b = c.Binding!;
            c.Binding = null;
            TransferResult result;
            if (b.IsNop)
            {
                result = CompleteNop(b);
            }
            else if (!TryFinishIo(b, c.Result, out result))
            {
                continue; // resubmitted for the rest of a short write
            }

            if (b.HoldsFdRef)
            {
                b.HoldsFdRef = false;
                ((RandomAccessDevice)b.Request!.Device).FileHandle!.DangerousRelease();
            }

            // Decrement before notifying: a handler that waits for InFlight to drop must see its own binding gone.
            Interlocked.Decrement(ref _inFlight);
            b.Complete(result, ref _faults);
        }
    }

    private static TransferResult CompleteNop(RandomAccessRequestBinding b)
    {
        if (!b.TryStart())
        {
            return TransferResult.Fail(TransferStatus.Cancelled);
        }

        if (b.PreStatus != TransferStatus.Success)
        {
            return TransferResult.Fail(b.PreStatus);
        }

        RandomAccessRequest request = b.Request!;
        var device = (RandomAccessDevice)request.Device;
        return device.IsDisposed
            ? TransferResult.Fail(TransferStatus.DeviceClosed)
            : device.Transfer(request.Operation, b.DeviceOffset, (byte*)b.Address, b.Length);
    }

    private bool TryFinishIo(RandomAccessRequestBinding b, int res, out TransferResult result)
    {
        RandomAccessOperation op = b.Request!.Operation;
        if (res < 0)
        {
            if (res == -Interop.Libc.EINTR || res == -Interop.Libc.EAGAIN)
            {
                return !Resubmit(b, out result);
            }

            result = TransferResult.FromErrno(-res);
            return true;
        }

        b.Progress += res;
        if (op == RandomAccessOperation.Write && b.Progress < b.Length)
        {
            if (res == 0)
            {
                result = TransferResult.FromErrno(Interop.Libc.EIO);
                return true;
            }

            return !Resubmit(b, out result);
        }

        result = TransferResult.Ok(b.Progress);
        return true;
    }

    /// <summary>Queues the rest of a binding again (published now, submitted by this thread's next enter).</summary>
    private bool Resubmit(RandomAccessRequestBinding b, out TransferResult result)
    {
        result = default;
        lock (_lock)
        {
            if (_overflow.Count > 0 || !TryPrepare(b))
            {
                _overflow.Enqueue(b);
            }
        }

        return true;
    }
}
