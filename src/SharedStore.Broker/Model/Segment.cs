using System.Numerics;
using SharedStore.Locks;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// One segment of a container: a data memfd (object bytes) and a lock memfd (header page + block lock records).
/// Shared segments hold many small objects; a dedicated segment holds one large object. The broker maps both
/// read-write for recovery and (later) for applying asynchronous writes.
/// </summary>
internal sealed unsafe class Segment : IDisposable
{
    private readonly RangeAllocator _data;
    private readonly RangeAllocator _records;
    private readonly ulong[]? _reservedPages; // shared segments: bit p = page p is reserved and broker-populated, not punched since
    private SafeFd? _dataReadOnly;

    public Segment(uint id, uint containerId, long dataCapacity, long recordCapacity, long blockSize, int lines, bool dedicated, BrokerIdentity broker)
    {
        Lines = lines;
        RecordSize = BlockLockDescriptor.RecordSize(lines);
        Id = id;
        Dedicated = dedicated;
        DataCapacity = dataCapacity;
        RecordCapacity = recordCapacity;
        DataFd = Memfd.Create($"sharedstore-c{containerId}-s{id}-data", dataCapacity);
        try
        {
            LockLength = LockSegmentDescriptor.LengthFor(recordCapacity, RecordSize);
            LockFd = Memfd.Create($"sharedstore-c{containerId}-s{id}-locks", LockLength);
            if (!Memfd.Reserve(LockFd, 0, LockLength, out int errno))
            {
                throw new SharedStoreException(ErrorCode.NoResources, $"cannot reserve {LockLength} bytes of lock table: {Interop.Libc.StrError(errno)}");
            }

            DataMap = MappedRegion.Map(DataFd, dataCapacity, writable: true);
            LockMap = MappedRegion.Map(LockFd, LockLength, writable: true);
            LockMap.Populate(0, LockLength);
            var h = (LockSegmentHeader*)LockMap.Pointer;
            h->Version = LockSegmentDescriptor.LayoutVersion;
            h->SegmentId = id;
            h->ContainerId = containerId;
            h->BrokerPid = broker.Pid;
            h->BrokerStart = broker.StartTicks;
            h->RecordCapacity = recordCapacity;
            h->BlockSize = blockSize;
            h->Slots = lines * BlockLockDescriptor.SlotsPerLine;
            h->RecordSize = RecordSize;
            Volatile.Write(ref h->Magic, LockSegmentDescriptor.Magic); // last: a region with a magic is complete
        }
        catch
        {
            Dispose();
            throw;
        }

        _data = new RangeAllocator(dataCapacity);
        _records = new RangeAllocator(recordCapacity);
        _reservedPages = dedicated ? null : new ulong[((dataCapacity >> 12) + 63) / 64];
    }

    public uint Id { get; }

    /// <summary>Reader lines of every record (the container's).</summary>
    public int Lines { get; }

    /// <summary>Bytes of one record.</summary>
    public int RecordSize { get; }

    public bool Dedicated { get; }

    public long DataCapacity { get; }

    public long RecordCapacity { get; }

    public long LockLength { get; }

    public SafeFd DataFd { get; }

    public SafeFd LockFd { get; } = null!;

    public MappedRegion DataMap { get; } = null!;

    public MappedRegion LockMap { get; } = null!;

    public int ObjectCount { get; set; }

    /// <summary>The uid whose memory quota the lock table is charged to (the creator of the object it was made for).</summary>
    public uint ChargedUid { get; set; }

    /// <summary>The read-only twin of the data descriptor, made on first need.</summary>
    public SafeFd DataReadOnlyFd => LazyInitializer.EnsureInitialized(ref _dataReadOnly, () => Memfd.ReopenReadOnly(DataFd));

    public BlockLockRecord* Record(long index) =>
        (BlockLockRecord*)(LockMap.Pointer + LockSegmentDescriptor.RecordsOffset + (index * RecordSize));

    /// <summary>A view of object <paramref name="o"/> (which lives in this segment) for the broker's own lock slot:
    /// every lock goes through the object's ledger. Dispose it before the object is freed.</summary>
    public ObjectView BrokerView(ObjectState o, int blockSize, bool durable, ILockRepairRequester? repair) =>
        new(o.Name, DataMap, o.DataOffset, LockMap, LockSegmentDescriptor.RecordsOffset + (o.RecordIndex * RecordSize), Lines,
            o.Size, BitOperations.Log2((uint)blockSize), BlockLockDescriptor.BrokerSlot(Lines), durable, repair, o.Ledger);

    public bool TryAllocate(long size, long blockCount, out long dataOffset, out long recordIndex)
    {
        long align = size >= 4096 ? 4096 : 64;
        dataOffset = _data.Allocate(size, align);
        recordIndex = -1;
        if (dataOffset < 0)
        {
            return false;
        }

        recordIndex = _records.Allocate(blockCount, 1);
        if (recordIndex < 0)
        {
            _data.Free(dataOffset, size);
            dataOffset = -1;
            return false;
        }

        return true;
    }

    /// <summary>Whether every page of [offset, offset+size) is reserved and populated in the broker's mapping already
    /// (a shared segment's small objects share pages: 4 objects of 1 KiB to a page), so a create there needs neither
    /// the fallocate nor the populate, two system calls of 2-5 µs each on this machine kind. Always false in a
    /// dedicated segment.</summary>
    public bool PagesReserved(long offset, long size)
    {
        if (_reservedPages is null)
        {
            return false;
        }

        for (long p = offset >> 12, end = (offset + size + 4095) >> 12; p < end; p++)
        {
            if ((_reservedPages[p >> 6] & (1UL << (int)(p & 63))) == 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Records that the pages of [offset, offset+size) were reserved (and are being populated).</summary>
    public void MarkReserved(long offset, long size) => SetPages(offset >> 12, (offset + size + 4095) >> 12, true);

    private void SetPages(long first, long end, bool reserved)
    {
        if (_reservedPages is null)
        {
            return;
        }

        for (long p = first; p < end; p++)
        {
            if (reserved)
            {
                _reservedPages[p >> 6] |= 1UL << (int)(p & 63);
            }
            else
            {
                _reservedPages[p >> 6] &= ~(1UL << (int)(p & 63));
            }
        }
    }

    public void Free(long dataOffset, long size, long recordIndex, long blockCount)
    {
        // Nobody uses the object any more (destroy waited for that): zero its records for the next owner and give
        // whole pages of its data back to the system.
        System.Runtime.InteropServices.NativeMemory.Clear(Record(recordIndex), (nuint)(blockCount * RecordSize)); // may exceed 2 GiB: no Span
        Memfd.Release(DataFd, dataOffset, size);
        SetPages((dataOffset + 4095) >> 12, (dataOffset + size) >> 12, false); // the whole pages Release punched
        _data.Free(dataOffset, size);
        _records.Free(recordIndex, blockCount);
    }

    public void Dispose()
    {
        DataMap?.Dispose();
        LockMap?.Dispose();
        _dataReadOnly?.Dispose();
        DataFd?.Dispose();
        LockFd?.Dispose();
    }
}

/// <summary>First-fit allocator of [0, capacity) ranges with coalescing frees. Broker-only, under the model lock.
/// Free ranges are kept by start (ordered: first fit by address) and by end, so a free finds both neighbours it merges
/// with in O(log n); it used to look for the range ending at its offset by walking every hole, which made freeing
/// 100 000 objects quadratic once they were freed out of address order.</summary>
internal sealed class RangeAllocator
{
    private readonly SortedDictionary<long, long> _free = new(); // start -> length
    private readonly Dictionary<long, long> _byEnd = []; // end -> start, of the same ranges

    public RangeAllocator(long capacity) => Add(0, capacity);

    /// <summary>Free ranges (for tests: a fully freed allocator has exactly one).</summary>
    public int HoleCount => _free.Count;

    public long Allocate(long length, long align)
    {
        foreach (var (offset, len) in _free)
        {
            long start = (offset + align - 1) & ~(align - 1);
            long pad = start - offset;
            if (len - pad < length)
            {
                continue;
            }

            RemoveRange(offset, len);
            if (pad > 0)
            {
                Add(offset, pad);
            }

            long rest = len - pad - length;
            if (rest > 0)
            {
                Add(start + length, rest);
            }

            return start;
        }

        return -1;
    }

    public void Free(long offset, long length)
    {
        long end = offset + length;
        if (_free.TryGetValue(end, out long nextLen))
        {
            RemoveRange(end, nextLen);
            length += nextLen;
        }

        if (_byEnd.TryGetValue(offset, out long prevStart))
        {
            RemoveRange(prevStart, offset - prevStart);
            length += offset - prevStart;
            offset = prevStart;
        }

        Add(offset, length);
    }

    private void Add(long offset, long length)
    {
        _free.Add(offset, length);
        _byEnd.Add(offset + length, offset);
    }

    private void RemoveRange(long offset, long length)
    {
        _free.Remove(offset);
        _byEnd.Remove(offset + length);
    }
}

/// <summary>What identifies this broker instance in region headers.</summary>
internal readonly record struct BrokerIdentity(int Pid, long StartTicks);
