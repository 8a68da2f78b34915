namespace SharedStore.Cli;

/// <summary>
/// The exit codes of <c>sharedstore</c>, one per outcome a script may want to tell apart (README, "The sharedstore
/// command"). Stable: a code is never reused for another meaning.
/// </summary>
internal static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;

    /// <summary>Any failure without a code of its own (internal broker error, I/O error, object too small…).</summary>
    public const int Failure = 1;

    /// <summary>Bad command line: unknown command or option, missing or malformed argument.</summary>
    public const int Usage = 2;

    /// <summary>No broker answers on the socket (or it went away during the command).</summary>
    public const int BrokerUnavailable = 3;

    /// <summary>A container, object or file does not exist.</summary>
    public const int NotFound = 4;

    /// <summary>The broker or the file system refused: not in the container's group, read-only member, file mode.</summary>
    public const int PermissionDenied = 5;

    /// <summary>A wait ran out: a lock wait of get/put, the broker not starting or not stopping in time.</summary>
    public const int Timeout = 6;

    /// <summary>The thing to create exists already (or is being destroyed).</summary>
    public const int Conflict = 7;

    /// <summary>The broker refused the request's arguments or resources (invalid name, size, out of memory).</summary>
    public const int Rejected = 8;

    /// <summary>Maps a library error to an exit code.</summary>
    public static int From(ErrorCode code) => code switch
    {
        ErrorCode.BrokerUnavailable or ErrorCode.VersionMismatch => BrokerUnavailable,
        ErrorCode.NotFound => NotFound,
        ErrorCode.PermissionDenied => PermissionDenied,
        ErrorCode.Timeout => Timeout,
        ErrorCode.AlreadyExists or ErrorCode.Destroyed => Conflict,
        ErrorCode.InvalidArgument or ErrorCode.NoResources or ErrorCode.WouldDeadlock => Rejected,
        _ => Failure,
    };
}
