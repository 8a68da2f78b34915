namespace SharedStore;

/// <summary>
/// Outcome codes of SharedStore calls. They mirror the seed's negative returns (the C value is <c>-(int)code</c>,
/// <c>include/sharedstore.h</c>) and travel unchanged on the wire: <c>sharedstore.proto</c>'s ErrorCode has the same
/// numbers, and <c>Protocol/WireErrors.cs</c> is the one mapping between the two (WireErrorTests pins every value).
/// A number, once given, is never reused.
/// </summary>
public enum ErrorCode
{
    /// <summary>Success (the seed's 0 or a non-negative id).</summary>
    Ok = 0,

    /// <summary>The container or object does not exist (or no longer does).</summary>
    NotFound = 1,

    /// <summary>A container or object of that name already exists.</summary>
    AlreadyExists = 2,

    /// <summary>The caller's Unix credentials do not admit it, or the container lets only its creator write.</summary>
    PermissionDenied = 3,

    /// <summary>No memory (the broker's memory limit, tmpfs full), or a table (member slots, lock records) is full.</summary>
    NoResources = 4,

    /// <summary>A blocking call did not complete within its timeout. Nothing is held on return.</summary>
    Timeout = 5,

    /// <summary>The container or object is being destroyed: joins are refused from the moment destroy is called.</summary>
    Destroyed = 6,

    /// <summary>An argument the broker checked was out of range (names, sizes, block size).</summary>
    InvalidArgument = 7,

    /// <summary>The broker is not running, or died; the client must reconnect.</summary>
    BrokerUnavailable = 8,

    /// <summary>The broker speaks another wire-protocol version.</summary>
    VersionMismatch = 9,

    /// <summary>The caller's CancellationToken fired. Nothing is held on return.</summary>
    Canceled = 10,

    /// <summary>The call would deadlock the calling process (e.g. a write on blocks it holds by get).</summary>
    WouldDeadlock = 11,

    /// <summary>An internal failure (a bug) in the broker or the library. From the broker, the message carries an error id
    /// only (<c>internal error, see broker log, error id X</c>); the broker logs the details under that id.</summary>
    Internal = 12,

    /// <summary>Client only: the submission ring or staging area is full and the options say not to wait
    /// (<see cref="AsyncFullMode.Fail"/>). Nothing was submitted.</summary>
    Busy = 13,

    /// <summary>A device failed: the broker's durable file or a <see cref="Devices.IRandomAccessDevice"/> reported an
    /// error the other codes do not name (EIO, EBADF, a short transfer...). A <see cref="Devices.DeviceException"/>
    /// keeps the errno in <see cref="SharedStoreException.Errno"/>.</summary>
    IoError = 14,
}
