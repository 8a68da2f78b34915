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

    public void Free(long dataOffset, long size, long recordIndex, long blockCount)
    {
        // Nobody uses the object any more (destroy waited for that): zero its records for the next owner and give
        // whole pages of its data back to the system.
        System.Runtime.InteropServices.NativeMemory.Clear(Record(recordIndex), (nuint)(blockCount * RecordSize)); // may exceed 2 GiB: no Span
        Memfd.Release(DataFd, dataOffset, size);
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

/// <summary>First-fit allocator of [0, capacity) ranges with coalescing frees. Broker-only, under the model lock.</summary>
internal sealed class RangeAllocator
{
    private readonly SortedDictionary<long, long> _free = new(); // offset -> length

    public RangeAllocator(long capacity) => _free[0] = capacity;

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

            _free.Remove(offset);
            if (pad > 0)
            {
                _free[offset] = pad;
            }

            long rest = len - pad - length;
            if (rest > 0)
            {
                _free[start + length] = rest;
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
            _free.Remove(end);
            length += nextLen;
        }

        // Find a free range ending exactly at offset (linear in the number of holes; holes are few).
        foreach (var (o, l) in _free)
        {
            if (o + l == offset)
            {
                _free[o] = l + length;
                return;
            }

            if (o > offset)
            {
                break;
            }
        }

        _free[offset] = length;
    }
}

/// <summary>What identifies this broker instance in region headers.</summary>
internal readonly record struct BrokerIdentity(int Pid, long StartTicks);
