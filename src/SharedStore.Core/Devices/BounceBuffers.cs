namespace SharedStore.Devices;

/// <summary>Read buffers for restore's direct reads, in transparent huge pages where the kernel gives them
/// (MADV_HUGEPAGE on an anonymous, 2 MiB-aligned mapping): physically contiguous memory lets a 1 MiB read go to
/// the disk as one request. Up to 32 buffers of one block each, 64 MiB at most.</summary>
internal sealed class BounceBuffers : IDisposable
{
    private const long HugePage = 2 << 20;
    private readonly nint _mapping;
    private readonly nuint _length;
    private readonly nint _base;
    private readonly long _stride;
    private readonly Stack<int> _free = new();

    private BounceBuffers(nint mapping, nuint length, nint @base, long stride, int count)
    {
        _mapping = mapping;
        _length = length;
        _base = @base;
        _stride = stride;
        Count = count;
        for (int k = count - 1; k >= 0; k--)
        {
            _free.Push(k);
        }
    }

    public int Count { get; }

    public nint this[int k] => _base + (nint)(k * _stride);

    /// <summary>Null where the block is too large for the budget or the memory cannot be mapped (reads then go
    /// straight into the object's memory).</summary>
    public static BounceBuffers? TryCreate(int blockSize)
    {
        int count = (int)Math.Min(32, (64L << 20) / blockSize);
        if (count < 4)
        {
            return null;
        }

        long stride = ((long)blockSize + 4095) & ~4095L;
        long length = (count * stride) + HugePage; // room to start on a huge-page boundary
        nint p = Interop.Libc.mmap(0, (nuint)length, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS, -1, 0);
        if (p == Interop.Libc.MAP_FAILED)
        {
            return null;
        }

        nint aligned = (nint)(((long)p + HugePage - 1) & ~(HugePage - 1));
        _ = Interop.Libc.madvise(aligned, (nuint)(count * stride), Interop.Libc.MADV_HUGEPAGE); // best effort
        return new BounceBuffers(p, (nuint)length, aligned, stride, count);
    }

    public int Rent()
    {
        lock (_free)
        {
            return _free.Pop(); // never empty: at most Count transfers are in flight
        }
    }

    public void Return(int k)
    {
        lock (_free)
        {
            _free.Push(k);
        }
    }

    public void Dispose() => Interop.Libc.munmap(_mapping, _length);
}
