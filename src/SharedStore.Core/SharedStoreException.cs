namespace SharedStore;

/// <summary>
/// The one base exception of SharedStore: every failure a caller can see, in the client library, the device library
/// (<see cref="Devices.DeviceException"/> derives from it) and from the broker, is one, with an <see cref="Code"/>.
/// <see cref="Code"/> mirrors the seed's negative return values, so code ported from the C interface can switch on it.
/// Misuse (a bad argument, a disposed object, a call out of order) is not an outcome: it throws the standard .NET
/// exceptions (<see cref="ArgumentException"/>, <see cref="ObjectDisposedException"/>,
/// <see cref="InvalidOperationException"/>), and a canceled token throws <see cref="OperationCanceledException"/>.
/// </summary>
public class SharedStoreException : Exception
{
    /// <summary>Creates an exception with a code and a message.</summary>
    public SharedStoreException(ErrorCode code, string message) : base(message) => Code = code;

    /// <summary>Creates an exception with a code, a message and the exception that caused it.</summary>
    public SharedStoreException(ErrorCode code, string message, Exception? inner) : base(message, inner) => Code = code;

    /// <summary>Creates an exception for a failed system call: a code, a message and the Linux errno.</summary>
    public SharedStoreException(ErrorCode code, string message, int errno) : base(message)
    {
        Code = code;
        Errno = errno;
    }

    /// <summary>What went wrong, as the seed's interface would return it (negated).</summary>
    public ErrorCode Code { get; }

    /// <summary>The Linux errno when a system call failed (<c>ENOSPC</c> is 28...), else 0.</summary>
    public int Errno { get; }

    /// <summary>The seed's C-style return value for this error: <c>-(int)Code</c>.</summary>
    public int SeedReturnValue => -(int)Code;
}
