using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// The write-back of durable containers (docs/ARCHITECTURE.md §11): a background thread, every 50 ms, and
/// <see cref="Flush"/> write each dirty block into its other shadow slot with a checksum and a generation through the
/// device scheduler, and fdatasync every file written before a later pass may overwrite the older slot (the invariant
/// is stated on <see cref="DurableStore"/>). One pass per container at a time (<see cref="DurableContainer.FlushGate"/>,
/// <see cref="LockLevel.DurableFlush"/>); one object's pass against its removal (<see cref="DurableObject.Gate"/>).
/// The containers and objects come from the catalog (<see cref="DurableStore"/>), copied under its lock.
/// </summary>
internal sealed unsafe partial class DurableWriteBack
{
    // Bytes in flight per batch (at most 32 blocks, at least one): each block holds a read lock until the kernel has
    // copied it into the page cache, so a writer of a block being written back waits at most for a batch's copies.
    private const long BatchBytes = 8 << 20;
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(50);

    private readonly DurableStore _catalog;
    private readonly IDeviceAccessScheduler _scheduler;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _stop = new();
    private long _writtenBytes;
    private long _writeErrors;

    public DurableWriteBack(DurableStore catalog, IDeviceAccessScheduler scheduler, ILogger logger)
    {
        _catalog = catalog;
        _scheduler = scheduler;
        _logger = logger;
        _thread = new Thread(WriteBackLoop) { IsBackground = true, Name = "sharedstore-writeback" };
        _thread.Start();
    }

    /// <summary>Bytes of blocks written back so far (data only).</summary>
    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);

    public long WriteErrors => Interlocked.Read(ref _writeErrors);

    /// <summary>Broker shutdown: stops the thread, then one last pass over every container (what clients do not hold
    /// write-locked goes to disk).</summary>
    public void Stop()
    {
        _stop.Set();
        _thread.Join(TimeSpan.FromSeconds(30));
        foreach (var dc in _catalog.Containers())
        {
            using (LockOrder.Enter(dc.FlushGate, LockLevel.DurableFlush))
            {
                var (_, error) = WriteBack(dc);
                if (error is not null)
                {
                    Log.WriteBackFailed(_logger, dc.Meta.Name, error);
                }
            }
        }
    }

    /// <summary>Returns once every block that was dirty when it was called has been written back and fdatasynced.
    /// Busy blocks (a writer holds them) are retried until the timeout.</summary>
    public void Flush(DurableContainer dc, TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        using (LockOrder.Enter(dc.FlushGate, LockLevel.DurableFlush))
        {
            while (true)
            {
                var (clean, error) = WriteBack(dc);
                if (error is not null)
                {
                    throw new BrokerError(ErrorCode.NoResources, $"flush of '{dc.Meta.Name}' failed: {error} (the memory copy is intact and stays dirty)");
                }

                if (clean)
                {
                    return;
                }

                if (token.IsCancellationRequested)
                {
                    throw new BrokerError(ErrorCode.Canceled, "flush canceled");
                }

                if (Environment.TickCount64 >= deadline)
                {
                    throw new BrokerError(ErrorCode.Timeout, $"flush of '{dc.Meta.Name}': blocks stayed write-locked by clients");
                }

                Thread.Sleep(1);
            }
        }
    }

    private void WriteBackLoop()
    {
        while (!_stop.Wait(Interval))
        {
            var all = _catalog.Containers();

            foreach (var dc in all)
            {
                if (LockOrder.TryEnter(dc.FlushGate, LockLevel.DurableFlush, out var held))
                {
                    using (held)
                    {
                        var (_, error) = WriteBack(dc);
                        if (error is not null)
                        {
                            Log.WriteBackFailed(_logger, dc.Meta.Name, error);
                        }
                    }
                }
            }
        }
    }

    /// <summary>One pass over a container: every dirty block that is not write-locked is checksummed and written to
    /// its other shadow slot under a read hold, and each file written is fdatasynced. Returns whether no dirty block was
    /// skipped, and the first error (failed blocks are marked dirty again).</summary>
    private (bool Clean, string? Error) WriteBack(DurableContainer dc)
    {
        var objects = _catalog.ObjectsOf(dc);

        bool clean = true;
        string? error = null;
        foreach (var d in objects)
        {
            using (LockOrder.Enter(d.Gate, LockLevel.DurableObject))
            {
                if (d.Closed)
                {
                    continue;
                }

                var (objClean, objError) = WriteBack(d);
                clean &= objClean;
                error ??= objError;
            }
        }

        return (clean, error);
    }

    private (bool Clean, string? Error) WriteBack(DurableObject d)
    {
        bool clean = true;
        int batchBlocks = (int)Math.Clamp(BatchBytes / d.BlockSize, 1, 32);
        var batch = new List<PendingWrite>(batchBlocks);
        using var inflight = new CountdownEvent(1); // this thread's own count, signalled in Finish
        string? error = null;
        bool wrote = false;
        try
        {
            for (long b = 0; b < d.BlockCount; b++)
            {
                BlockRange block = d.View.Block(b);
                if (!block.AnyDirty())
                {
                    continue;
                }

                if (!block.TryAcquireReadFast())
                {
                    clean = false; // a writer holds or waits for it: next pass (never block here: see class comment)
                    continue;
                }

                // The read hold is kept until the block's write has completed (Start's completion drops it): the
                // kernel copies the block from the shared memory into the page cache, so the bytes it copies are the
                // bytes checksummed here. No bounce buffer: one copy per block instead of two.
                bool started = false;
                try
                {
                    if (!block.TakeDirty())
                    {
                        continue;
                    }

                    var w = PendingWrite.Rent();
                    w.Block = b;
                    w.Length = d.BlockLength(b);
                    w.Torn = block.AnyTorn();
                    w.Hold = block;
                    w.DataCrc = DurableFileDescriptor.Crc32C(d.Data + (b * d.BlockSize), w.Length);
                    batch.Add(w);
                    Start(d, w, inflight);
                    started = true;
                }
                finally
                {
                    if (!started)
                    {
                        block.ReleaseRead();
                    }
                }

                if (batch.Count == batchBlocks)
                {
                    string? e = Finish(d, batch, inflight); // after an error too: the batch stays bounded
                    error ??= e;
                    wrote = true;
                }
            }

            if (batch.Count > 0)
            {
                string? e = Finish(d, batch, inflight);
                error ??= e;
                wrote = true;
            }

            if (wrote)
            {
                // Before the next pass may overwrite the older slot of any block written now (see the invariant).
                d.Device.Flush();
            }
        }
        catch (DeviceException e)
        {
            error ??= e.Message;
        }
        finally
        {
            if (batch.Count > 0)
            {
                _ = Finish(d, batch, inflight); // thrown past started writes: they still own their holds and signal
            }
        }

        return (clean, error);
    }

    /// <summary>Starts the write of one block, read-held by the broker's slot: one scatter/gather request (slot header
    /// page + the block's data straight from the shared memory) into its other slot, counted in
    /// <paramref name="inflight"/>. The read hold is dropped once both bindings have completed; if this throws,
    /// nothing was queued and the caller drops it.</summary>
    private void Start(DurableObject d, PendingWrite w, CountdownEvent inflight)
    {
        long b = w.Block;
        int target = d.Slot[b] == 0 ? 1 : 0;
        long gen = d.Generation[b] + 1;
        var h = (DurableSlotHeader*)w.Header;
        *h = default;
        h->Magic = DurableFileDescriptor.SlotMagic;
        h->Version = DurableFileDescriptor.SlotVersion;
        h->Flags = w.Torn ? DurableFileDescriptor.SlotFlagTorn : (ushort)0;
        h->Block = b;
        h->Generation = gen;
        h->Length = w.Length;
        h->DataCrc = w.DataCrc;
        DurableSlotHeader.Seal(h);
        w.Target = target;
        w.Generation = gen;
        w.Failed = null;
        w.Bindings = 2;
        inflight.AddCount(2);
        var header = new RandomAccessRequestBinding((nint)w.Header, DurableFileDescriptor.SlotHeaderSize, Completed) { State = w };
        var data = new RandomAccessRequestBinding((nint)(d.Data + (b * d.BlockSize)), w.Length, Completed) { State = w };
        long offset = DurableFileDescriptor.SlotOffset(b, target, d.BlockSize);
        try
        {
            if (BrokerTestHooks.TearWindowMs > 0)
            {
                ScheduleWithTearWindow(d, [(offset, header, data)]); // tests only: header and data apart in time
                return;
            }

            var request = new RandomAccessRequest(d.Device, RandomAccessOperation.Write, offset);
            request.Add(header);
            request.Add(data);
            _scheduler.Schedule(request);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
        {
            w.Failed = "the broker is stopping"; // no binding was queued: nothing will signal for this block, and
            inflight.Signal(2);                   // the caller drops the read hold
            throw;
        }

        void Completed(RandomAccessRequestBinding binding, TransferResult r)
        {
            var pending = (PendingWrite)binding.State!;
            if (!r.Succeeded)
            {
                pending.Failed = r.Errno != 0 ? Interop.Libc.StrError(r.Errno) : r.Status.ToString();
            }

            if (Interlocked.Decrement(ref pending.Bindings) == 0)
            {
                pending.Hold.ReleaseRead();
            }

            inflight.Signal();
        }
    }

    /// <summary>Waits for a batch's writes (<see cref="Start"/>ed), records the new slots; blocks whose write failed
    /// are marked dirty again. Returns the first error.</summary>
    private string? Finish(DurableObject d, List<PendingWrite> batch, CountdownEvent inflight)
    {
        string? error = null;
        long start = long.MaxValue, end = 0;
        inflight.Signal();
        inflight.Wait();
        inflight.Reset(1);
        foreach (var w in batch)
        {
            if (w.Failed is null)
            {
                d.Slot[w.Block] = (byte)w.Target;
                d.Generation[w.Block] = w.Generation;
                Interlocked.Add(ref _writtenBytes, w.Length);
                long at = DurableFileDescriptor.SlotOffset(w.Block, w.Target, d.BlockSize);
                start = Math.Min(start, at);
                end = Math.Max(end, at + DurableFileDescriptor.SlotHeaderSize + w.Length);
            }
            else
            {
                error ??= $"block {w.Block} of '{d.State.Name}': {w.Failed}";
                Interlocked.Increment(ref _writeErrors);
                d.View.Block(w.Block).MarkDirty();
            }

            w.Return();
        }

        batch.Clear();

        // Start writing the batch out now (POSIX_FADV_DONTNEED starts writeback of the range's dirty pages without
        // waiting, and drops only pages that are already clean), so that the disk works while the next batches are
        // checksummed and copied and the pass's fdatasync finds little left to write. With the whole pass left to
        // that fdatasync, it took 200-250 ms of a 1 GiB flush that spent 450-600 ms in all (durable-writeback, bench
        // README).
        if (end > start)
        {
            d.Device.StartWriteBack(start, end - start);
        }

        return error;
    }

    /// <summary>One block's write in flight: its slot header page (aligned) and what Finish records. Pooled
    /// process-wide (at most 64 kept), so flushes on pool threads do not each keep their own.</summary>
    private sealed class PendingWrite
    {
        private static readonly Stack<PendingWrite> s_pool = new();

        private PendingWrite() => Header = (byte*)NativeMemory.AlignedAlloc(DurableFileDescriptor.SlotHeaderSize, 4096);

        public byte* Header { get; }

        public long Block;
        public int Length;
        public bool Torn;
        public uint DataCrc;
        public int Target;
        public long Generation;
        public string? Failed;
        public int Bindings;
        public BlockRange Hold; // the block's read hold (the broker's slot, through its ledger), released at completion

        public static PendingWrite Rent()
        {
            lock (s_pool)
            {
                if (s_pool.TryPop(out var w))
                {
                    return w;
                }
            }

            return new PendingWrite();
        }

        public void Return()
        {
            Hold = default;
            lock (s_pool)
            {
                if (s_pool.Count < 64)
                {
                    s_pool.Push(this);
                    return;
                }
            }

            NativeMemory.AlignedFree(Header);
        }
    }
}
