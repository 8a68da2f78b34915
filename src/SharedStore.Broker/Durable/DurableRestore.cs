using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>What a restore found, per object (logged, counted, and pinned by the crash tests).</summary>
internal readonly record struct RestoreReport(string Container, string Object, long Blocks, long TornSlots, long CorruptBlocks);

/// <summary>
/// Restore of durable objects at broker start (docs/ARCHITECTURE.md §11): per block, the valid shadow slot with the
/// highest generation, read through the device scheduler in a sliding window (<see cref="SlidingWindowTransfer"/>),
/// direct into huge-page bounce buffers (<see cref="DeviceBuffers"/>) where the file system allows it. Runs before the
/// broker serves anyone; takes no model lock (the registry records the restored object), only the catalog's, to
/// attach the object's file.
/// </summary>
internal sealed unsafe class DurableRestore(DurableStore catalog, IDeviceAccessScheduler scheduler, ILogger logger)
{
    private readonly DurableStore _catalog = catalog;
    private readonly IDeviceAccessScheduler _scheduler = scheduler;
    private readonly ILogger _logger = logger;
    private long _tornSlots;
    private long _corruptBlocks;

    public long TornSlots => Interlocked.Read(ref _tornSlots);

    public long CorruptBlocks => Interlocked.Read(ref _corruptBlocks);

    /// <summary>Loads an object's blocks from its file into its (fresh, zeroed) shared memory: per block the valid
    /// slot with the highest generation; torn slots are skipped and counted; a block whose written slots are all
    /// invalid is marked torn in memory (leases report it) and counted as corrupt.</summary>
    public RestoreReport RestoreObject(DurableContainer dc, ObjectState o, string file, out DurableObject restored)
    {
        string path = Path.Combine(dc.Directory, file); // for messages only
        if (!IsObjectFileName(file))
        {
            throw new InvalidDataException($"the metadata names object file '{file}', not one the broker makes (o-N.ssdata)");
        }

        var device = new RandomAccessFileDevice(path, dc.Folder.OpenFile(file, writable: true), DeviceMode.None);
        int bs = (int)dc.Meta.BlockSize;
        var d = _catalog.Attach(dc, o, file, device);
        restored = d;
        long torn = 0, corrupt = 0;
        DurableStore.CheckFileHeader(device, o, bs);

        // The object's memory is reserved and mapped on another thread, in order, ahead of the reads below: the
        // reservation (a fallocate that zeroes 1 GiB in 250-350 ms here) and the page-table work then run beside the
        // disk instead of before it (MACHINE-FACTS: a never-touched page costs about 2 µs). A read that overtakes it
        // faults its pages itself. The object is served only after the reservation has covered all of it.
        using var reserve = new RestoreReservation(o);

        // 1. Every slot header (2 per block), batched.
        long n = o.BlockCount;
        byte* headers = (byte*)NativeMemory.AlignedAlloc((nuint)(2 * n * DurableFileDescriptor.SlotHeaderSize), 4096);
        try
        {
            RunBatched(2 * n, i => (DurableFileDescriptor.SlotOffset(i / 2, (int)(i % 2), bs), (nint)(headers + (i * DurableFileDescriptor.SlotHeaderSize)), DurableFileDescriptor.SlotHeaderSize), device, RandomAccessOperation.Read);

            // 2. Choose per block; read the chosen slot's data straight into the object's memory, batched.
            var choice = new int[n];
            for (long b = 0; b < n; b++)
            {
                choice[b] = Choose(headers, b, exclude: -1, d.BlockLength(b), ref torn);
            }

            (long Offset, nint Memory, int Length) Data(long b) => choice[b] < 0 ? (-1, 0, 0) : (DurableFileDescriptor.SlotOffset(b, choice[b], bs) + DurableFileDescriptor.SlotHeaderSize, (nint)(d.Data + (b * bs)), d.BlockLength(b));

            // Each block's checksum is taken as its read completes (on the scheduler's completion thread, while the
            // next reads are in flight) rather than in a pass over the whole object afterwards, which took 170-250 ms
            // per GiB after the reads.
            var crc = new uint[n];
            void Checksum(long b) => crc[b] = DurableFileDescriptor.Crc32C(d.Data + (b * bs), d.BlockLength(b));

            // Direct I/O where the file system allows it and the block is aligned (all but a short last block), into
            // huge-page bounce buffers, then one copy into the object's memory. Buffered, the kernel copied every
            // block out of the page cache and the cold 1 GiB ended up cached twice: 1.2-1.7 s for 1 GiB against
            // 0.5-1.1 s for the baseline. Direct into the object's 4 KiB shared-memory pages, a 1 MiB read needs 256
            // DMA segments where the virtio disk takes 254 per request (max_segments), so every block went out as
            // two requests: fio here reads 1 MiB direct at QD32 at 0.93-1.04 GB/s into 4 KiB pages and 2.1-2.5 GB/s
            // into huge pages (4 alternating runs each). A direct read first writes back any dirty cached pages of
            // its range (the page cache of a broker killed before the kernel wrote them), so it sees what they hold.
            using (var direct = TryOpenDirect(dc, file, device))
            using (var bounce = direct is null ? null : TryCreateBounceBuffers(bs))
            {
                bool Aligned(long b)
                {
                    var (off, mem, len) = Data(b);
                    return direct is not null && off >= 0 && off % direct.OffsetAlignment == 0 && len % direct.OffsetAlignment == 0 && (bounce is not null || mem % direct.MemoryAlignment == 0);
                }

                if (direct is not null)
                {
                    RunBatched(n, b => Aligned(b) ? Data(b) : (-1, 0, 0), direct, RandomAccessOperation.Read, Checksum, bounce);
                }

                RunBatched(n, b => Aligned(b) ? (-1, 0, 0) : Data(b), device, RandomAccessOperation.Read, Checksum);
            }

            // 3. Verify; fall back to the other slot when the data does not match its checksum.
            for (long b = 0; b < n; b++)
            {
                int len = d.BlockLength(b);
                byte* mem = d.Data + (b * bs);
                int s = choice[b];
                int tried = 0; // slots whose data failed: with both headers intact and both data damaged, the
                               // fallback would otherwise alternate between the two forever (the broker never started)
                while (s >= 0)
                {
                    var h = SlotHeader(headers, b, s);
                    if ((s == choice[b] ? crc[b] : DurableFileDescriptor.Crc32C(mem, len)) == h->DataCrc)
                    {
                        d.Slot[b] = (byte)s;
                        d.Generation[b] = h->Generation;
                        if ((h->Flags & DurableFileDescriptor.SlotFlagTorn) != 0)
                        {
                            d.View.Block(b).MarkTorn();
                        }

                        break;
                    }

                    torn++; // data torn under an intact header: the write of the data did not finish
                    tried |= 1 << s;
                    int other = Choose(headers, b, exclude: s, len, ref torn);
                    if (other >= 0 && (tried & (1 << other)) != 0)
                    {
                        other = -1;
                    }

                    if (other >= 0)
                    {
                        RunBatched(1, _ => (DurableFileDescriptor.SlotOffset(b, other, bs) + DurableFileDescriptor.SlotHeaderSize, (nint)mem, len), device, RandomAccessOperation.Read);
                    }

                    s = other;
                }

                if (s < 0 && (IsEmpty(headers, b, 0) != IsEmpty(headers, b, 1)))
                {
                    // One slot never written, the other invalid: that slot was the block's first write-back, torn by
                    // the crash (a second write-back goes to the other slot, so it would not be empty). The empty
                    // slot is the block's durable copy by the invariant: the object's initial zeros, generation 0.
                    // The next write-back goes to the invalid slot (Slot names the empty one), above its generation.
                    int empty = IsEmpty(headers, b, 0) ? 0 : 1;
                    new Span<byte>(mem, len).Clear();
                    d.Slot[b] = (byte)empty;
                    d.Generation[b] = Gen(headers, b, 1 - empty);
                }
                else if (s < 0 && !IsEmpty(headers, b, 0))
                {
                    // Written once, no valid copy left: never serve it silently.
                    new Span<byte>(mem, len).Clear();
                    d.View.Block(b).MarkTorn();
                    corrupt++;
                    d.Generation[b] = Math.Max(Gen(headers, b, 0), Gen(headers, b, 1));
                    Log.DurableBlockCorrupt(_logger, dc.Meta.Name, o.Name, b, Describe(headers, b, 0, len), Describe(headers, b, 1, len));
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(headers);
        }

        reserve.Wait(); // before anyone can use the object: running out of memory is a failed restore, not a SIGBUS

        // Restored blocks are clean: what is on disk is what is in memory (torn marks set above keep their dirty
        // bit, so a corrupt block is rewritten, flagged torn, at the next pass).
        d.View.All.MarkCleanUnlessTorn();

        // The restored bytes are in place and no one has the object yet: version 1, every block of it (object versions, §4.1).
        ObjectVersion.Publish(d.View, 0, n - 1);

        Interlocked.Add(ref _tornSlots, torn);
        Interlocked.Add(ref _corruptBlocks, corrupt);
        return new RestoreReport(dc.Meta.Name, o.Name, n, torn, corrupt);
    }

    /// <summary>Reserves (fallocate) and maps (MADV_POPULATE_WRITE) an object's memory on its own thread, 8 MiB at a
    /// time from the start. <see cref="Wait"/> throws NoResources if the memory could not be reserved; disposing
    /// stops it early (a failed restore) and waits for it.</summary>
    private sealed class RestoreReservation : IDisposable
    {
        private const long Chunk = 8 << 20;
        private readonly Thread _thread;
        private volatile bool _stop;
        private string? _error;

        public RestoreReservation(ObjectState o)
        {
            _thread = new Thread(() => Run(o)) { IsBackground = true, Name = "sharedstore-restore-reserve" };
            _thread.Start();
        }

        public void Wait()
        {
            _thread.Join();
            if (_error is not null)
            {
                throw new BrokerError(ErrorCode.NoResources, _error);
            }
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }

        private void Run(ObjectState o)
        {
            for (long at = 0; at < o.Size && !_stop; at += Chunk)
            {
                long len = Math.Min(Chunk, o.Size - at);
                if (!Memfd.Reserve(o.Segment.DataFd, o.DataOffset + at, len, out int errno))
                {
                    _error = $"cannot reserve {o.Size} bytes of shared memory for object '{o.Name}': {Interop.Libc.StrError(errno)}";
                    return;
                }

                o.Segment.DataMap.Populate(o.DataOffset + at, len);
            }
        }
    }

    private static int Choose(byte* headers, long b, int exclude, int length, ref long torn)
    {
        int best = -1;
        long bestGen = -1;
        for (int s = 0; s < 2; s++)
        {
            if (s == exclude)
            {
                continue;
            }

            var h = SlotHeader(headers, b, s);
            if (DurableSlotHeader.IsEmpty(h))
            {
                continue;
            }

            if (!DurableSlotHeader.IsIntact(h, b) || h->Length != length)
            {
                if (exclude < 0)
                {
                    torn++; // a header torn or damaged: counted once, on the first look
                }

                continue;
            }

            if (h->Generation > bestGen)
            {
                best = s;
                bestGen = h->Generation;
            }
        }

        return best;
    }

    private static string Describe(byte* headers, long b, int s, int length)
    {
        var h = SlotHeader(headers, b, s);
        return DurableSlotHeader.IsEmpty(h) ? "never written"
            : !DurableSlotHeader.IsIntact(h, b) ? "header damaged"
            : h->Length != length ? $"header for {h->Length} bytes"
            : $"generation {h->Generation}, data does not match its checksum";
    }

    /// <summary>Block <paramref name="b"/>'s slot <paramref name="s"/> header in the headers restore read (2 per block).</summary>
    private static DurableSlotHeader* SlotHeader(byte* headers, long b, int s) =>
        (DurableSlotHeader*)(headers + (((2 * b) + s) * DurableFileDescriptor.SlotHeaderSize));

    private static bool IsEmpty(byte* headers, long b, int s) =>
        DurableSlotHeader.IsEmpty(SlotHeader(headers, b, s));

    private static long Gen(byte* headers, long b, int s)
    {
        var h = SlotHeader(headers, b, s);
        return DurableSlotHeader.IsIntact(h, b) ? h->Generation : 0;
    }

    private void RunBatched(long count, Func<long, (long Offset, nint Memory, int Length)> item, RandomAccessFileDevice device, RandomAccessOperation op, Action<long>? completed = null, DeviceBuffers? bounce = null) =>
        SlidingWindowTransfer.Run(_scheduler, count, item, device, op, completed, bounce);

    /// <summary>Read buffers for restore's direct reads: the device library's huge-page pool (<see cref="DeviceBuffers"/>:
    /// physically contiguous memory lets a 1 MiB read go to the disk as one request). Up to 32 buffers of one block
    /// each, 64 MiB at most; null where the block is too large for that budget or the memory cannot be had (reads
    /// then go straight into the object's memory).</summary>
    private static DeviceBuffers? TryCreateBounceBuffers(int blockSize)
    {
        int count = (int)Math.Min(32, (64L << 20) / blockSize);
        if (count < 4)
        {
            return null;
        }

        try
        {
            return new DeviceBuffers(blockSize, count);
        }
        catch (DeviceException)
        {
            return null;
        }
    }

    /// <summary>The file opened again for direct reads (O_NOFOLLOW in the folder, and the same file as
    /// <paramref name="buffered"/>, or not used), or null where the file system refuses O_DIRECT (tmpfs before 6.6,
    /// some FUSE file systems).</summary>
    private static RandomAccessFileDevice? TryOpenDirect(DurableContainer dc, string file, RandomAccessFileDevice buffered)
    {
        SafeFd fd;
        try
        {
            fd = dc.Folder.OpenFile(file, writable: false, direct: true);
        }
        catch (DurableFolderException)
        {
            return null;
        }

        if (DurableFolder.IdentityOf(fd) != DurableFolder.IdentityOf(buffered.FileHandle!))
        {
            fd.Dispose(); // replaced between the two opens: read through the first descriptor only
            return null;
        }

        try
        {
            return new RandomAccessFileDevice(buffered.Path, fd, DeviceMode.ReadOnly | DeviceMode.Direct);
        }
        catch (DeviceException)
        {
            fd.Dispose();
            return null;
        }
    }

    /// <summary>Whether a name from the metadata is one the broker makes: <c>o-N.ssdata</c>, N decimal.</summary>
    private static bool IsObjectFileName(string file) =>
        file.Length > "o-.ssdata".Length && file.StartsWith("o-", StringComparison.Ordinal) && file.EndsWith(".ssdata", StringComparison.Ordinal)
        && file.AsSpan(2, file.Length - "o-.ssdata".Length).IndexOfAnyExceptInRange('0', '9') < 0;
}
