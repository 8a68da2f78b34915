using System.Diagnostics.CodeAnalysis;

namespace SharedStore.Devices;

/// <summary>A device operation failed. A <see cref="SharedStoreException"/> like every SharedStore failure: its
/// <see cref="SharedStoreException.Code"/> classifies the errno (<see cref="ErrorCode.NoResources"/> for ENOSPC,
/// <see cref="ErrorCode.PermissionDenied"/> for EACCES or a write to a read-only device,
/// <see cref="ErrorCode.IoError"/> for EIO and every errno no other code names...), and
/// <see cref="SharedStoreException.Errno"/> keeps the Linux errno (0 when SharedStore detected the failure itself).
/// <see cref="Status"/> is the <see cref="TransferStatus"/> that classifies a transfer's failure.</summary>
public class DeviceException : SharedStoreException
{
    /// <summary>Creates an exception with a message, an errno and a status.</summary>
    /// <param name="message">What failed, naming the call or the rule broken.</param>
    /// <param name="errno">The Linux errno, or 0 when no system call failed.</param>
    /// <param name="status">The classification of the failure.</param>
    public DeviceException(string message, int errno, TransferStatus status = TransferStatus.IOError)
        : base(CodeOf(errno, status), message, errno) => Status = status;

    /// <summary>The classification of the failure.</summary>
    public TransferStatus Status { get; }

    /// <summary>The code of a device failure: the status names misuse and refusals; a kernel error goes through the
    /// errno table.</summary>
    internal static ErrorCode CodeOf(int errno, TransferStatus status) => status switch
    {
        TransferStatus.Cancelled => ErrorCode.Canceled,
        TransferStatus.ReadOnly => ErrorCode.PermissionDenied,
        TransferStatus.OutOfRange or TransferStatus.Misaligned => ErrorCode.InvalidArgument,
        TransferStatus.DeviceClosed => ErrorCode.IoError,
        _ => errno == 0 ? ErrorCode.IoError : Interop.Libc.ErrorCodeOf(errno),
    };
}
/// <summary>Throws for misuse of the device library (bad arguments, disposed objects, failed management calls).
/// Kept out of line so callers' hot paths stay small.</summary>
internal static class DeviceThrowHelper
{
    [DoesNotReturn]
    internal static void ThrowArgumentOutOfRange(string paramName, object? value, string message) =>
        throw new ArgumentOutOfRangeException(paramName, value, message);

    [DoesNotReturn]
    internal static void ThrowArgument(string paramName, string message) =>
        throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    internal static void ThrowObjectDisposed(object instance) =>
        throw new ObjectDisposedException(instance.GetType().FullName);

    [DoesNotReturn]
    internal static void ThrowInvalidOperation(string message) =>
        throw new InvalidOperationException(message);

    [DoesNotReturn]
    internal static void ThrowSyscall(string call, string? path, int errno) =>
        throw new DeviceException(
            path is null
                ? $"{call} failed: {Interop.Libc.StrError(errno)} (errno {errno})"
                : $"{call} failed for '{path}': {Interop.Libc.StrError(errno)} (errno {errno})",
            errno);
}
