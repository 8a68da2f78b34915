using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>What <see cref="RandomAccessDevices.Create(DeviceKind, DeviceOptions)"/> needs for each kind. Unused
/// properties are ignored.</summary>
public sealed class DeviceOptions
{
    /// <summary>File kind: the path to open. Required.</summary>
    public string? Path { get; init; }

    /// <summary>File kind: the open mode. Default <see cref="DeviceMode.None"/> (existing file, read-write, buffered).</summary>
    public DeviceMode Mode { get; init; }

    /// <summary>Null kind: the logical size in bytes. MemoryRegion kind: the region length. Default 0.</summary>
    public long Size { get; init; }

    /// <summary>MemoryRegion kind: the region's base address. Required.</summary>
    public nint BaseAddress { get; init; }

    /// <summary>MemoryRegion kind: the object that keeps the mapping alive (e.g. the mapping's SafeHandle).</summary>
    public object? Owner { get; init; }

    /// <summary>MemoryRegion kind: refuse writes into the region.</summary>
    public bool ReadOnly { get; init; }
}

/// <summary>The device factory, keyed by <see cref="DeviceKind"/>.</summary>
[SupportedOSPlatform("linux")]
public static class RandomAccessDevices
{
    /// <summary>Creates a device of the given kind.</summary>
    /// <param name="kind">Which implementation.</param>
    /// <param name="options">Its parameters.</param>
    /// <returns>The new device; the caller disposes it.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">A required option is missing or invalid.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kind"/> is unknown, or a size is negative.</exception>
    /// <exception cref="DeviceException">The file could not be opened.</exception>
    public static RandomAccessDevice Create(DeviceKind kind, DeviceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        switch (kind)
        {
            case DeviceKind.File:
                if (string.IsNullOrEmpty(options.Path))
                {
                    DeviceThrowHelper.ThrowArgument(nameof(options), "A file device needs DeviceOptions.Path.");
                }

                return new RandomAccessFileDevice(options.Path, options.Mode);
            case DeviceKind.Null:
                return new RandomAccessNullDevice(options.Size);
            case DeviceKind.MemoryRegion:
                return new MemoryRegionDevice(options.BaseAddress, options.Size, options.Owner, options.ReadOnly);
            default:
                DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(kind), kind, "Unknown device kind.");
                return null;
        }
    }

    /// <summary>Opens a file device.</summary>
    /// <param name="path">The file path.</param>
    /// <param name="mode">The open mode.</param>
    /// <returns>The device.</returns>
    /// <exception cref="DeviceException">open failed.</exception>
    public static RandomAccessFileDevice OpenFile(string path, DeviceMode mode) => new(path, mode);

    /// <summary>Wraps a mapped memory region.</summary>
    /// <param name="baseAddress">Start of the region.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="owner">Keeps the mapping alive.</param>
    /// <returns>The device.</returns>
    public static MemoryRegionDevice OverMemory(nint baseAddress, long length, object? owner) => new(baseAddress, length, owner);
}
