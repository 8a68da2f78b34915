using System.Diagnostics.CodeAnalysis;

namespace SharedStore;

/// <summary>Throw sites kept out of line so the hot paths that check arguments stay small.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void Throw(ErrorCode code, string message) => throw new SharedStoreException(code, message);

    [DoesNotReturn]
    public static void ObjectDisposed(string what) => throw new ObjectDisposedException(what);

    [DoesNotReturn]
    public static void OutOfRange(string param, long offset, long size, long objectSize) =>
        throw new ArgumentOutOfRangeException(param, $"range [{offset}, {offset}+{size}) is outside the object of {objectSize} bytes");

    [DoesNotReturn]
    public static void LeaseAlreadyReleased() =>
        throw new InvalidOperationException("The lease was already put (disposed); a lease may be put once.");

    [DoesNotReturn]
    public static void InvalidOperation(string message) => throw new InvalidOperationException(message);

    [DoesNotReturn]
    public static void Timeout(string what) => throw new SharedStoreException(ErrorCode.Timeout, $"{what} timed out");

    [DoesNotReturn]
    public static void Canceled(string what, CancellationToken token) =>
        throw new OperationCanceledException($"{what} was canceled", token);

    [DoesNotReturn]
    public static void BrokerLost() =>
        throw new SharedStoreException(ErrorCode.BrokerUnavailable, "The broker this handle was opened on is gone. The client connects again on its next call; join the container again by name.");
}
