using System.Buffers;
using System.Globalization;
using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// A pool of equal-sized I/O buffers in one anonymous mapping that starts on a 2 MiB boundary and asks for
/// transparent huge pages (MADV_HUGEPAGE), populated when the pool is made. Use it for the memory of large direct
/// (O_DIRECT) transfers.
/// </summary>
/// <remarks>
/// <para><b>Why.</b> A direct transfer hands the disk the buffer's physical pages, one DMA segment per physically
/// contiguous run. Memory from malloc or <c>NativeMemory.AlignedAlloc</c> is made of 4 KiB pages that are almost never
/// contiguous (255.1 runs per 1 MiB buffer measured through /proc/self/pagemap here), and the virtio disk of this
/// machine kind takes at most 254 segments per request (<c>/sys/block/vda/queue/max_segments</c>), so every 1 MiB
/// write left as two requests and paid the kernel's page pinning for 256 pages. From one huge page a 1 MiB buffer
/// is one segment and one request. fio shows the same effect on its own buffers (<c>--iomem=mmaphuge</c> against
/// the default malloc). Measurements: docs/DEVICES.md, "Sequential writes: where the time went".</para>
/// <para><b>Rule for callers.</b> Direct transfers of more than 64 KiB should use buffers from a pool like this
/// (or other huge-page memory), with buffer sizes that divide 2 MiB (64 KiB to 2 MiB) so that no buffer straddles two
/// huge pages. Buffered transfers do not need it: the kernel copies them into the page cache. Small direct transfers
/// (4 KiB random reads) fit in one page and gain nothing.</para>
/// <para><b>Fallback.</b> Huge pages are a request, not a promise: with transparent huge pages set to <c>never</c>, or
/// when the kernel finds no free 2 MiB run, the pool is backed by 4 KiB pages and still works; <see cref="HugePageBytes"/>
/// says what the kernel gave.</para>
/// <para><b>Thread safety.</b> <see cref="TryRent"/> and <see cref="Return"/> may be called from any thread (one lock
/// of the pool's own). Buffers themselves are the renter's until returned.</para>
/// </remarks>
[SupportedOSPlatform("linux")]
public sealed unsafe class DeviceBuffers : IDisposable
{
    /// <summary>The huge-page size the mapping is aligned to (x86_64 PMD size).</summary>
    public const int HugePageSize = 1 << 21; // 2 MiB

    /// <summary>The largest pool: one io_uring fixed buffer covers at most 1 GiB, and no caller here needs more.</summary>
    public const long MaxPoolBytes = 1L << 30; // 1 GiB

    private const int PageSize = 1 << 12; // 4096

    private readonly object _lock = new();
    private readonly nint _mapping;
    private readonly nuint _mappingLength;
    private readonly nint _base;
    private readonly int[] _free;
    private readonly bool[] _rented;
    private int _freeCount;
    private int _disposed;

    /// <summary>Maps and populates <paramref name="count"/> buffers of <paramref name="bufferSize"/> bytes.</summary>
    /// <param name="bufferSize">Bytes per buffer; buffers start on 4096-byte boundaries (the stride is the size rounded up).</param>
    /// <param name="count">Number of buffers.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the pool would exceed <see cref="MaxPoolBytes"/>.</exception>
    /// <exception cref="DeviceException">mmap failed (ENOMEM), or the memory could not be populated.</exception>
    public DeviceBuffers(int bufferSize, int count)
    {
        if (bufferSize <= 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(bufferSize), bufferSize, "The buffer size must be positive.");
        }

        if (count <= 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(count), count, "The buffer count must be positive.");
        }

        long stride = ((long)bufferSize + PageSize - 1) & ~(long)(PageSize - 1);
        long length = stride * count;
        if (length > MaxPoolBytes)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(count), count, $"The pool would take {length} bytes; at most {MaxPoolBytes}.");
        }

        // Round the used length up to whole huge pages: the tail of the last huge page is then ours, not a neighbour
        // mapping's, so the kernel can back it with a huge page too.
        long used = (length + HugePageSize - 1) & ~(long)(HugePageSize - 1);
        _mappingLength = (nuint)(used + HugePageSize); // room to start on a 2 MiB boundary
        _mapping = Interop.Libc.mmap(0, _mappingLength, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE,
            Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS | Interop.Libc.MAP_NORESERVE, -1, 0);
        if (_mapping == Interop.Libc.MAP_FAILED)
        {
            DeviceThrowHelper.ThrowSyscall("mmap(DeviceBuffers)", null, Interop.Libc.LastErrno);
        }

        _base = (nint)(((long)_mapping + HugePageSize - 1) & ~(long)(HugePageSize - 1));
        try
        {
            // Best effort: EINVAL means the kernel has no transparent huge pages; the pool then uses 4 KiB pages.
            _ = Interop.Libc.madvise(_base, (nuint)used, Interop.Libc.MADV_HUGEPAGE);
            Populate(_base, used);
        }
        catch
        {
            _ = Interop.Libc.munmap(_mapping, _mappingLength);
            throw;
        }

        BufferSize = bufferSize;
        Stride = (int)stride;
        Count = count;
        Length = length;
        _free = new int[count];
        _rented = new bool[count];
        for (int i = 0; i < count; i++)
        {
            _free[i] = count - 1 - i;
        }

        _freeCount = count;
        HugePageBytes = MeasureHugePageBytes(_base);
    }

    /// <summary>Bytes per buffer.</summary>
    public int BufferSize { get; }

    /// <summary>Distance between the starts of consecutive buffers (the size rounded up to 4096).</summary>
    public int Stride { get; }

    /// <summary>Number of buffers.</summary>
    public int Count { get; }

    /// <summary>Address of buffer 0; the pool covers [<see cref="BaseAddress"/>, <see cref="BaseAddress"/> + <see cref="Length"/>).
    /// A multiple of <see cref="HugePageSize"/>.</summary>
    public nint BaseAddress => _base;

    /// <summary><see cref="Count"/> × <see cref="Stride"/>.</summary>
    public long Length { get; }

    /// <summary>Bytes of the pool the kernel backed with huge pages when it was populated (from /proc/self/smaps;
    /// -1 when that could not be read). 0 means 4 KiB pages only: transparent huge pages are off or none were free.</summary>
    public long HugePageBytes { get; }

    /// <summary>Buffers not rented now.</summary>
    public int Available
    {
        get
        {
            lock (_lock)
            {
                return _freeCount;
            }
        }
    }

    /// <summary>The address of buffer <paramref name="index"/>.</summary>
    /// <param name="index">0 to <see cref="Count"/> − 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The pool is disposed.</exception>
    public nint this[int index]
    {
        get
        {
            CheckIndex(index);
            return _base + ((nint)index * Stride);
        }
    }

    /// <summary>Buffer <paramref name="index"/> as a span of <see cref="BufferSize"/> bytes.</summary>
    /// <param name="index">0 to <see cref="Count"/> − 1.</param>
    /// <returns>The span; valid until the pool is disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The pool is disposed.</exception>
    public Span<byte> GetSpan(int index) => new((void*)this[index], BufferSize);

    /// <summary>Buffer <paramref name="index"/> as <see cref="Memory{T}"/> (for <see cref="DeviceAccess"/>); pinning it is free.</summary>
    /// <param name="index">0 to <see cref="Count"/> − 1.</param>
    /// <returns>The memory; valid until the pool is disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The pool is disposed.</exception>
    public Memory<byte> GetMemory(int index) => new NativeBuffer(this[index], BufferSize).Memory;

    /// <summary>True when [<paramref name="address"/>, <paramref name="address"/> + <paramref name="length"/>) lies inside the pool.</summary>
    /// <param name="address">Start of the range.</param>
    /// <param name="length">Its length.</param>
    /// <returns>Whether the pool contains the range.</returns>
    public bool Contains(nint address, long length) =>
        length >= 0 && address >= _base && (long)(address - _base) <= Length - length;

    /// <summary>Takes a free buffer.</summary>
    /// <param name="index">The buffer's index when one was free.</param>
    /// <returns>False when every buffer is rented (an expected outcome: wait for a return, or make a larger pool).</returns>
    /// <exception cref="ObjectDisposedException">The pool is disposed.</exception>
    public bool TryRent(out int index)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            if (_freeCount == 0)
            {
                index = -1;
                return false;
            }

            index = _free[--_freeCount];
            _rented[index] = true;
            return true;
        }
    }

    /// <summary>Gives a rented buffer back.</summary>
    /// <param name="index">An index <see cref="TryRent"/> returned.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is out of range.</exception>
    /// <exception cref="InvalidOperationException">The buffer is not rented (returned twice, or never rented).</exception>
    /// <exception cref="ObjectDisposedException">The pool is disposed.</exception>
    public void Return(int index)
    {
        CheckIndex(index);
        lock (_lock)
        {
            if (!_rented[index])
            {
                DeviceThrowHelper.ThrowInvalidOperation($"Buffer {index} is not rented; a buffer is returned once per rent.");
            }

            _rented[index] = false;
            _free[_freeCount++] = index;
        }
    }

    /// <summary>Unmaps the pool. Call only after every transfer into or out of its buffers has been notified: the
    /// kernel keeps the pages of a transfer in flight, but the caller's view of them is gone. Idempotent.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed != 0)
            {
                return;
            }

            _disposed = 1;
        }

        _ = Interop.Libc.munmap(_mapping, _mappingLength);
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"DeviceBuffers({Count} x {BufferSize} B at 0x{(long)_base:x}, {HugePageBytes >> 20} MiB in huge pages)");

    private void CheckIndex(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(index), index, $"Between 0 and {Count - 1}.");
        }

        ThrowIfDisposed();
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            DeviceThrowHelper.ThrowObjectDisposed(this);
        }
    }

    /// <summary>Faults the whole range in now, so the huge pages (or their 4 KiB fallback) are allocated here rather
    /// than in the first transfers, and a shortage of memory shows up as an exception here.</summary>
    private static void Populate(nint start, long length)
    {
        if (Interop.Libc.madvise(start, (nuint)length, Interop.Libc.MADV_POPULATE_WRITE) == 0)
        {
            return;
        }

        int errno = Interop.Libc.LastErrno;
        if (errno != Interop.Libc.EINVAL)
        {
            // ENOMEM, EFAULT, EHWPOISON: the memory is not there to be had.
            DeviceThrowHelper.ThrowSyscall("madvise(MADV_POPULATE_WRITE)", null, errno);
        }

        // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch one byte per page instead.
        for (long off = 0; off < length; off += PageSize)
        {
            ((byte*)start)[off] = 0;
        }
    }

    /// <summary>AnonHugePages of the mapping that starts at <paramref name="start"/>, from /proc/self/smaps.</summary>
    private static long MeasureHugePageBytes(nint start)
    {
        string prefix = ((long)start).ToString("x", CultureInfo.InvariantCulture) + "-";
        try
        {
            bool inside = false;
            foreach (string line in File.ReadLines("/proc/self/smaps"))
            {
                // A mapping's header line starts with "start-end "; its fields with "Name:".
                int space = line.IndexOf(' ', StringComparison.Ordinal);
                if (space > 0 && line[space - 1] != ':')
                {
                    inside = line.StartsWith(prefix, StringComparison.Ordinal);
                }
                else if (inside && line.StartsWith("AnonHugePages:", StringComparison.Ordinal))
                {
                    string kb = line["AnonHugePages:".Length..].Trim().Split(' ')[0];
                    return long.Parse(kb, CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return -1;
    }

    /// <summary>Physically contiguous runs of 4 KiB pages in [<paramref name="address"/>, +<paramref name="length"/>):
    /// the DMA segments a direct transfer of that memory needs before the block layer's limits. From
    /// /proc/self/pagemap (bits 0-54 of each entry are the page frame), which shows frames only to root; -1 when it
    /// cannot be read. For tests and the bench's investigation, not for hot paths.</summary>
    internal static int PhysicalRuns(nint address, int length)
    {
        try
        {
            using var map = new FileStream("/proc/self/pagemap", FileMode.Open, FileAccess.Read);
            Span<byte> entry = stackalloc byte[8];
            long previous = -2;
            int runs = 0;
            for (long page = address >> 12; page < (address + length + PageSize - 1) >> 12; page++)
            {
                map.Position = page * 8;
                map.ReadExactly(entry);
                long frame = BitConverter.ToInt64(entry) & ((1L << 55) - 1);
                if (frame == 0 || frame != previous + 1)
                {
                    runs++;
                }

                previous = frame;
            }

            return runs;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return -1;
        }
    }

    /// <summary>Wraps native memory as <see cref="Memory{T}"/>; pinning returns the address unchanged (the memory never moves).</summary>
    private sealed class NativeBuffer(nint address, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new((void*)address, length);

        public override MemoryHandle Pin(int elementIndex = 0) => new((byte*)address + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
