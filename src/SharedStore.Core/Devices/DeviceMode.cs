namespace SharedStore.Devices;

/// <summary>How a <see cref="RandomAccessFileDevice"/> opens its file. Flags combine; <see cref="None"/> opens an
/// existing file for reading and writing through the page cache.</summary>
[Flags]
public enum DeviceMode
{
    /// <summary>Open an existing file read-write, buffered, with no access-pattern hint.</summary>
    None = 0,

    /// <summary>Open read-only; every WRITE is reported through its binding as <see cref="TransferStatus.ReadOnly"/>.</summary>
    ReadOnly = 1 << 0,

    /// <summary>Create the file when it does not exist (O_CREAT).</summary>
    Create = 1 << 1,

    /// <summary>Truncate the file to zero bytes on open (O_TRUNC). Not allowed with <see cref="ReadOnly"/>.</summary>
    Truncate = 1 << 2,

    /// <summary>Bypass the page cache (O_DIRECT). Offsets, lengths and buffer addresses must then be multiples of
    /// the device's <see cref="IRandomAccessDevice.OffsetAlignment"/> and <see cref="IRandomAccessDevice.MemoryAlignment"/>;
    /// transfers that are not are reported as <see cref="TransferStatus.Misaligned"/> before reaching the kernel.
    /// Large direct transfers want buffers from <see cref="DeviceBuffers"/> (huge pages; see there why).
    /// For writes that are durable on completion at any alignment, use <see cref="WriteThrough"/>; the two combine.</summary>
    Direct = 1 << 3,

    /// <summary>Hint sequential access (posix_fadvise POSIX_FADV_SEQUENTIAL: larger read-ahead).</summary>
    SequentialAccess = 1 << 4,

    /// <summary>Hint random access (posix_fadvise POSIX_FADV_RANDOM: no read-ahead). Not allowed with
    /// <see cref="SequentialAccess"/>.</summary>
    RandomAccess = 1 << 5,

    /// <summary>Every WRITE completes only once its data is on the device (O_DSYNC), with no alignment rule: the data
    /// still goes through the page cache. This is what Fennel's "direct" mode means on Linux. Costs a device flush per
    /// write; combine with <see cref="Direct"/> to also bypass the page cache (Direct's alignment rules then apply).</summary>
    WriteThrough = 1 << 6,

    /// <summary>A scratch device: an unnamed file in the directory of the path (O_TMPFILE), so no name exists to be
    /// left behind, whether the device is disposed or the process dies. The path's last component is used only in
    /// messages and need not exist (it is not created). Where the file system has no O_TMPFILE, the file is created at
    /// the path (O_EXCL, so an existing file is never taken over) and unlinked at once: a crash between the two system
    /// calls leaves it behind. Implies creation; not allowed with <see cref="ReadOnly"/>.</summary>
    Temporary = 1 << 7,
}

/// <summary>The device implementations <see cref="RandomAccessDevices.Create(DeviceKind, DeviceOptions)"/> can build.</summary>
public enum DeviceKind
{
    /// <summary>A <see cref="RandomAccessFileDevice"/> over a file or block device.</summary>
    File,

    /// <summary>A <see cref="RandomAccessNullDevice"/>: writes are discarded, reads return zeros.</summary>
    Null,

    /// <summary>A <see cref="MemoryRegionDevice"/> over an already mapped memory region.</summary>
    MemoryRegion,
}

/// <summary>The direction of a transfer.</summary>
public enum RandomAccessOperation
{
    /// <summary>Device to memory.</summary>
    Read,

    /// <summary>Memory to device.</summary>
    Write,
}
