using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// A device over an already mapped memory region (for example a shared-memory object), so a scheduler can move
/// data between files and regions with the same request model. Transfers are memory copies. The region has a fixed
/// size: a READ past the end is short, a WRITE past the end is <see cref="TransferStatus.OutOfRange"/>.
/// </summary>
/// <remarks>The device does not own the mapping. It holds a reference to <c>owner</c> (for example the
/// <see cref="System.Runtime.InteropServices.SafeHandle"/> or view object that unmaps the region) so the mapping is
/// not released while the device is alive; the owner must not unmap the region before the device is disposed and
/// its transfers have completed.</remarks>
[SupportedOSPlatform("linux")]
public sealed class MemoryRegionDevice : RandomAccessDevice
{
    private readonly nint _base;
    private readonly long _length;

    // Kept only to root the mapping's owner for the device's lifetime.
    private object? _owner;

    /// <summary>Creates a device over <paramref name="length"/> bytes at <paramref name="baseAddress"/>.</summary>
    /// <param name="baseAddress">Start of the mapped region.</param>
    /// <param name="length">Length of the region in bytes.</param>
    /// <param name="owner">The object that keeps the mapping alive, or null when the caller guarantees it.</param>
    /// <param name="readOnly">Refuse WRITE transfers into the region.</param>
    /// <exception cref="ArgumentException"><paramref name="baseAddress"/> is zero.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    public MemoryRegionDevice(nint baseAddress, long length, object? owner, bool readOnly = false)
        : base($"memory@0x{baseAddress:x}+{length}", readOnly ? DeviceMode.ReadOnly : DeviceMode.None)
    {
        if (baseAddress == 0)
        {
            DeviceThrowHelper.ThrowArgument(nameof(baseAddress), "The region base address must not be zero.");
        }

        if (length < 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(length), length, "Length must not be negative.");
        }

        _base = baseAddress;
        _length = length;
        _owner = owner;
    }

    /// <summary>Start of the region.</summary>
    public nint BaseAddress => _base;

    /// <summary>The object keeping the mapping alive (null after dispose).</summary>
    public object? Owner => _owner;

    /// <inheritdoc/>
    public override long Size
    {
        get
        {
            ThrowIfDisposed();
            return _length;
        }
    }

    /// <summary>Not supported: a mapped region has a fixed size.</summary>
    /// <param name="size">Ignored.</param>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override void SetSize(long size) =>
        throw new NotSupportedException("A memory region device has a fixed size.");

    /// <summary>Nothing to flush: writes land in the mapping directly.</summary>
    /// <param name="metadata">Ignored.</param>
    /// <exception cref="ObjectDisposedException">The device is disposed.</exception>
    public override void Flush(bool metadata = false) => ThrowIfDisposed();

    private protected override void DisposeCore() => _owner = null;

    private protected override TransferStatus ValidateRange(RandomAccessOperation operation, long offset, int length) =>
        operation == RandomAccessOperation.Write && offset + length > _length ? TransferStatus.OutOfRange : TransferStatus.Success;

    internal override unsafe TransferResult Transfer(RandomAccessOperation operation, long offset, byte* buffer, int length)
    {
        if (operation == RandomAccessOperation.Write)
        {
            Buffer.MemoryCopy(buffer, (byte*)_base + offset, _length - offset, length);
            return TransferResult.Ok(length);
        }

        int n = offset >= _length ? 0 : (int)Math.Min(length, _length - offset);
        Buffer.MemoryCopy((byte*)_base + offset, buffer, length, n);
        return TransferResult.Ok(n);
    }
}
