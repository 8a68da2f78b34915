namespace SharedStore.Devices;

/// <summary>
/// A unit of logically contiguous random-access storage (a file, a block device, a memory region). This interface
/// carries only management operations; data moves through an <see cref="IDeviceAccessScheduler"/>, which reaches the
/// device's internal transfer methods. Implementations derive from <see cref="RandomAccessDevice"/>.
/// </summary>
public interface IRandomAccessDevice : IDisposable
{
    /// <summary>A name for messages: the file path, or a description of the region.</summary>
    string Name { get; }

    /// <summary>The mode the device was opened with.</summary>
    DeviceMode Mode { get; }

    /// <summary>True when WRITE transfers are refused.</summary>
    bool IsReadOnly { get; }

    /// <summary>True once <see cref="IDisposable.Dispose"/> has run.</summary>
    bool IsDisposed { get; }

    /// <summary>Required multiple for device offsets and transfer lengths (1 when the device has no rule).</summary>
    int OffsetAlignment { get; }

    /// <summary>Required multiple for buffer addresses (1 when the device has no rule).</summary>
    int MemoryAlignment { get; }

    /// <summary>The current size in bytes.</summary>
    /// <exception cref="ObjectDisposedException">The device is disposed.</exception>
    /// <exception cref="DeviceException">The size query failed.</exception>
    long Size { get; }

    /// <summary>Grows or shrinks the device.</summary>
    /// <param name="size">The new size in bytes.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The device is disposed.</exception>
    /// <exception cref="NotSupportedException">The device cannot change size (memory region).</exception>
    /// <exception cref="DeviceException">The device is read-only or the system call failed.</exception>
    void SetSize(long size);

    /// <summary>Makes completed writes durable (fdatasync, or fsync when <paramref name="metadata"/> is true).</summary>
    /// <param name="metadata">Also flush metadata such as timestamps.</param>
    /// <exception cref="ObjectDisposedException">The device is disposed.</exception>
    /// <exception cref="DeviceException">The flush failed; earlier writes may not be durable.</exception>
    void Flush(bool metadata = false);
}
