using System.Runtime.InteropServices;

namespace SharedStore.Devices;

/// <summary>How one binding's transfer ended. Every value except <see cref="Success"/> is an error outcome that is
/// reported through the binding, never thrown by the scheduler.</summary>
public enum TransferStatus
{
    /// <summary>The transfer ran; <see cref="TransferResult.BytesTransferred"/> may be short only for a READ that
    /// reached the end of the device.</summary>
    Success,

    /// <summary>Cancelled before it completed (by <see cref="IDeviceAccessScheduler.Cancel"/> or scheduler shutdown).</summary>
    Cancelled,

    /// <summary>The device was disposed before the transfer started.</summary>
    DeviceClosed,

    /// <summary>A WRITE to a read-only device.</summary>
    ReadOnly,

    /// <summary>A negative offset, or a range beyond the end of a device that cannot grow.</summary>
    OutOfRange,

    /// <summary>Direct I/O with an offset, length or buffer address that is not a multiple of the device's alignment.</summary>
    Misaligned,

    /// <summary>The kernel reported an error; see <see cref="TransferResult.Errno"/>.</summary>
    IOError,
}

/// <summary>The outcome delivered to one binding's completion notification.</summary>
[StructLayout(LayoutKind.Auto)]
public readonly struct TransferResult : IEquatable<TransferResult>
{
    /// <summary>Creates a result for a binding of exactly <paramref name="bytesTransferred"/> bytes.</summary>
    /// <param name="status">How the transfer ended.</param>
    /// <param name="bytesTransferred">Bytes moved (0 unless <paramref name="status"/> is Success).</param>
    /// <param name="errno">The Linux errno for <see cref="TransferStatus.IOError"/> (and the errno equivalent of
    /// other failures), 0 on success.</param>
    public TransferResult(TransferStatus status, int bytesTransferred, int errno)
        : this(status, bytesTransferred, errno, bytesTransferred)
    {
    }

    /// <summary>Creates a result.</summary>
    /// <param name="status">How the transfer ended.</param>
    /// <param name="bytesTransferred">Bytes moved (0 unless <paramref name="status"/> is Success).</param>
    /// <param name="errno">The Linux errno for <see cref="TransferStatus.IOError"/> (and the errno equivalent of
    /// other failures), 0 on success.</param>
    /// <param name="requestedBytes">The binding's length: the bytes the transfer was asked to move.</param>
    public TransferResult(TransferStatus status, int bytesTransferred, int errno, int requestedBytes)
    {
        Status = status;
        BytesTransferred = bytesTransferred;
        Errno = errno;
        RequestedBytes = requestedBytes;
    }

    /// <summary>How the transfer ended.</summary>
    public TransferStatus Status { get; }

    /// <summary>Bytes moved; equal to <see cref="RequestedBytes"/> on success except for a READ that reached end of
    /// device (see <see cref="IsShort"/>).</summary>
    public int BytesTransferred { get; }

    /// <summary>The Linux errno (EINVAL for misaligned direct I/O, EBADF for read-only or closed devices,
    /// ECANCELED for cancellation), 0 on success.</summary>
    public int Errno { get; }

    /// <summary>The binding's length when it was scheduled: what a full transfer moves.</summary>
    public int RequestedBytes { get; }

    /// <summary>True when <see cref="Status"/> is <see cref="TransferStatus.Success"/> (full or short).</summary>
    public bool Succeeded => Status == TransferStatus.Success;

    /// <summary>True when the transfer succeeded and moved every requested byte: the one check a caller that needs
    /// the whole binding makes.</summary>
    public bool IsComplete => Status == TransferStatus.Success && BytesTransferred == RequestedBytes;

    /// <summary>True when the transfer succeeded but moved fewer bytes than requested: a READ that reached the end
    /// of the device (<see cref="BytesTransferred"/> bytes are valid, possibly 0). Never true for a WRITE, whose
    /// short transfers the schedulers continue until complete or failed.</summary>
    public bool IsShort => Status == TransferStatus.Success && BytesTransferred < RequestedBytes;

    internal static TransferResult Ok(int bytes) => new(TransferStatus.Success, bytes, 0);

    /// <summary>This result for a binding of <paramref name="length"/> bytes (stamped by the binding when it is notified).</summary>
    internal TransferResult ForLength(int length) => new(Status, BytesTransferred, Errno, length);

    internal static TransferResult Fail(TransferStatus status) => new(status, 0, status switch
    {
        TransferStatus.Cancelled => Interop.Libc.ECANCELED,
        TransferStatus.DeviceClosed or TransferStatus.ReadOnly => Interop.Libc.EBADF,
        TransferStatus.OutOfRange => Interop.Libc.EINVAL,
        TransferStatus.Misaligned => Interop.Libc.EINVAL,
        _ => Interop.Libc.EIO,
    });

    internal static TransferResult FromErrno(int errno) =>
        errno == Interop.Libc.ECANCELED ? Fail(TransferStatus.Cancelled) : new(TransferStatus.IOError, 0, errno);

    /// <summary>An exception describing this failed result for the given binding.</summary>
    /// <param name="binding">The binding that received the result (names offset, length and device).</param>
    /// <returns>A <see cref="DeviceException"/>; callers decide whether to throw it.</returns>
    public DeviceException ToException(RandomAccessRequestBinding binding)
    {
        ArgumentNullException.ThrowIfNull(binding);
        string where = $"offset {binding.DeviceOffset}, length {binding.Length}";
        IRandomAccessDevice? device = binding.Request?.Device;
        string message = Status switch
        {
            TransferStatus.Success => $"Transfer succeeded ({BytesTransferred} bytes) at {where}.",
            TransferStatus.Cancelled => $"Transfer cancelled at {where}.",
            TransferStatus.DeviceClosed => $"Device {device?.Name} was closed before the transfer at {where}.",
            TransferStatus.ReadOnly => $"Device {device?.Name} is read-only; WRITE at {where} refused.",
            TransferStatus.OutOfRange => $"Range {where} is outside device {device?.Name} (size {device?.Size}).",
            TransferStatus.Misaligned =>
                $"Direct I/O on {device?.Name} needs offset and length multiples of {device?.OffsetAlignment} and a " +
                $"buffer address multiple of {device?.MemoryAlignment}; got {where}, address 0x{binding.Address:x}.",
            _ => $"Transfer at {where} on {device?.Name} failed: {Interop.Libc.StrError(Errno)} (errno {Errno}).",
        };
        return new DeviceException(message, Errno, Status);
    }

    /// <inheritdoc/>
    public bool Equals(TransferResult other) =>
        Status == other.Status && BytesTransferred == other.BytesTransferred && Errno == other.Errno &&
        RequestedBytes == other.RequestedBytes;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is TransferResult other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Status, BytesTransferred, Errno, RequestedBytes);

    /// <inheritdoc/>
    public override string ToString() => $"{Status} bytes={BytesTransferred}/{RequestedBytes} errno={Errno}";

    /// <summary>Equality of status, bytes, errno and requested bytes.</summary>
    public static bool operator ==(TransferResult left, TransferResult right) => left.Equals(right);

    /// <summary>Inequality of status, bytes, errno and requested bytes.</summary>
    public static bool operator !=(TransferResult left, TransferResult right) => !left.Equals(right);
}
