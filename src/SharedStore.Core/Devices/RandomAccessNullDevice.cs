using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// A device that discards writes and reads zeros, for tests and for measuring scheduler overhead. It behaves
/// like a file of <see cref="Size"/> bytes: a READ past the end is short, a WRITE past the end grows the size.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class RandomAccessNullDevice : RandomAccessDevice
{
    private long _size;

    /// <summary>Creates a null device of the given logical size.</summary>
    /// <param name="size">The initial logical size in bytes.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    public RandomAccessNullDevice(long size = 0)
        : base("null", DeviceMode.None)
    {
        if (size < 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(size), size, "Size must not be negative.");
        }

        _size = size;
    }

    /// <inheritdoc/>
    public override long Size
    {
        get
        {
            ThrowIfDisposed();
            return Volatile.Read(ref _size);
        }
    }

    /// <inheritdoc/>
    public override void SetSize(long size)
    {
        ThrowIfDisposed();
        if (size < 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(size), size, "Size must not be negative.");
        }

        Volatile.Write(ref _size, size);
    }

    /// <inheritdoc/>
    public override void Flush(bool metadata = false) => ThrowIfDisposed();

    private protected override void DisposeCore()
    {
    }

    internal override unsafe TransferResult Transfer(RandomAccessOperation operation, long offset, byte* buffer, int length)
    {
        if (operation == RandomAccessOperation.Write)
        {
            // Interlocked max: concurrent writers past the end must leave the largest end as the size.
            long end = offset + length;
            long current;
            while (end > (current = Volatile.Read(ref _size)) &&
                   Interlocked.CompareExchange(ref _size, end, current) != current)
            {
            }

            return TransferResult.Ok(length);
        }

        long size = Volatile.Read(ref _size);
        int n = offset >= size ? 0 : (int)Math.Min(length, size - offset);
        new Span<byte>(buffer, n).Clear();
        return TransferResult.Ok(n);
    }
}
