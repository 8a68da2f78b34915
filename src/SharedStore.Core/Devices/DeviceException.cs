using System.Diagnostics.CodeAnalysis;

namespace SharedStore.Devices;

/// <summary>A device operation failed. Carries the Linux errno when the failure came from the kernel (0 when it was
/// detected by SharedStore, e.g. misaligned direct I/O) and the <see cref="TransferStatus"/> that classifies it.</summary>
public class DeviceException : IOException
{
    /// <summary>Creates an exception with a message, an errno and a status.</summary>
    /// <param name="message">What failed, naming the call or the rule broken.</param>
    /// <param name="errno">The Linux errno, or 0 when no system call failed.</param>
    /// <param name="status">The classification of the failure.</param>
    public DeviceException(string message, int errno, TransferStatus status = TransferStatus.IOError)
        : base(message, errno)
    {
        Errno = errno;
        Status = status;
    }

    /// <summary>The Linux errno, or 0 when no system call failed.</summary>
    public int Errno { get; }

    /// <summary>The classification of the failure.</summary>
    public TransferStatus Status { get; }
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
