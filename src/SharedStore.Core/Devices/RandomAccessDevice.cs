using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// Base of every device: owns the shared arithmetic (range and alignment checks) and the internal transfer
/// entry points that only schedulers reach. Defaults are valid for a device with no alignment rule.
/// </summary>
[SupportedOSPlatform("linux")]
public abstract class RandomAccessDevice : IRandomAccessDevice
{
    private readonly object _registrationGate = new();
    private DeviceRegistration[] _registrations = [];
    private int _disposed;

    /// <summary>Initializes the base with a name, a mode and alignment rules (1 = none).</summary>
    /// <param name="name">A name for messages.</param>
    /// <param name="mode">The mode the device was opened with.</param>
    /// <param name="offsetAlignment">Required multiple of offsets and lengths; a power of two.</param>
    /// <param name="memoryAlignment">Required multiple of buffer addresses; a power of two.</param>
    private protected RandomAccessDevice(string name, DeviceMode mode, int offsetAlignment = 1, int memoryAlignment = 1)
    {
        Name = name;
        Mode = mode;
        OffsetAlignment = offsetAlignment;
        MemoryAlignment = memoryAlignment;
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public DeviceMode Mode { get; }

    /// <inheritdoc/>
    public bool IsReadOnly => (Mode & DeviceMode.ReadOnly) != 0;

    /// <inheritdoc/>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <inheritdoc/>
    public int OffsetAlignment { get; }

    /// <inheritdoc/>
    public int MemoryAlignment { get; }

    /// <inheritdoc/>
    public abstract long Size { get; }

    /// <inheritdoc/>
    public abstract void SetSize(long size);

    /// <inheritdoc/>
    public abstract void Flush(bool metadata = false);

    /// <inheritdoc/>
    public override string ToString() => $"{GetType().Name}({Name}, {Mode})";

    /// <summary>Disposes the device. Transfers already started keep their own reference to the descriptor and
    /// finish; transfers not yet started are reported as <see cref="TransferStatus.DeviceClosed"/>.</summary>
    public void Dispose()
    {
        // Interlocked: two threads disposing at once must run DisposeCore exactly once.
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            DisposeCore();
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the device's resources; runs once.</summary>
    private protected abstract void DisposeCore();

    /// <summary>The descriptor io_uring submits against, or null when the device has none (transfers then run as
    /// memory copies on the scheduler's completion thread).</summary>
    internal virtual SafeFd? FileHandle => null;

    /// <summary>Checks a transfer before it is started. Returns Success or the status to report.</summary>
    internal TransferStatus Validate(RandomAccessOperation operation, long offset, nint address, int length)
    {
        if (IsDisposed)
        {
            return TransferStatus.DeviceClosed;
        }

        if (offset < 0 || length < 0 || offset > long.MaxValue - length)
        {
            return TransferStatus.OutOfRange;
        }

        if (operation == RandomAccessOperation.Write && IsReadOnly)
        {
            return TransferStatus.ReadOnly;
        }

        // Alignments are powers of two, so a mask test replaces the division.
        if (((offset | (long)length) & (OffsetAlignment - 1)) != 0 || (address & (MemoryAlignment - 1)) != 0)
        {
            return TransferStatus.Misaligned;
        }

        return ValidateRange(operation, offset, length);
    }

    /// <summary>Device-specific range rule (a fixed-size region refuses writes beyond its end).</summary>
    private protected virtual TransferStatus ValidateRange(RandomAccessOperation operation, long offset, int length) =>
        TransferStatus.Success;

    /// <summary>
    /// Performs one synchronous transfer on the calling thread. A WRITE loops until <paramref name="length"/> bytes
    /// moved or an error occurs; a READ returns short only at end of device. Called by schedulers only, after <see cref="Validate"/>.
    /// </summary>
    internal abstract unsafe TransferResult Transfer(RandomAccessOperation operation, long offset, byte* buffer, int length);

    /// <summary>This device's registration with <paramref name="scheduler"/>, or null. Lock-free: the array is
    /// replaced, never changed in place.</summary>
    internal DeviceRegistration? FindRegistration(IDeviceAccessScheduler scheduler)
    {
        // Volatile: pairs with the replacement below, so a reader sees a fully built array.
        foreach (DeviceRegistration r in Volatile.Read(ref _registrations))
        {
            if (ReferenceEquals(r.Scheduler, scheduler))
            {
                return r;
            }
        }

        return null;
    }

    /// <summary>Adds a registration with <paramref name="scheduler"/>; null when there already is one.</summary>
    internal DeviceRegistration? AddRegistration(IDeviceAccessScheduler scheduler)
    {
        lock (_registrationGate)
        {
            if (FindRegistration(scheduler) is not null)
            {
                return null;
            }

            var r = new DeviceRegistration(scheduler, this);
            Volatile.Write(ref _registrations, [.. _registrations, r]);
            return r;
        }
    }

    /// <summary>Removes <paramref name="registration"/> (no-op when it is already gone).</summary>
    internal void RemoveRegistration(DeviceRegistration registration)
    {
        lock (_registrationGate)
        {
            Volatile.Write(ref _registrations, Array.FindAll(_registrations, r => !ReferenceEquals(r, registration)));
        }
    }

    private protected void ThrowIfDisposed()
    {
        if (IsDisposed)
        {
            DeviceThrowHelper.ThrowObjectDisposed(this);
        }
    }

    internal static bool IsPowerOfTwo(int value) => value > 0 && (value & (value - 1)) == 0;
}
