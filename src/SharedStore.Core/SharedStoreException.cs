namespace SharedStore;

/// <summary>
/// The one base exception of SharedStore. <see cref="Code"/> mirrors the seed's negative return values, so code
/// ported from the C interface can switch on it.
/// </summary>
public class SharedStoreException : Exception
{
    /// <summary>Creates an exception with a code and a message.</summary>
    public SharedStoreException(ErrorCode code, string message) : base(message) => Code = code;

    /// <summary>Creates an exception with a code, a message and the exception that caused it.</summary>
    public SharedStoreException(ErrorCode code, string message, Exception? inner) : base(message, inner) => Code = code;

    /// <summary>What went wrong, as the seed's interface would return it (negated).</summary>
    public ErrorCode Code { get; }

    /// <summary>The seed's C-style return value for this error: <c>-(int)Code</c>.</summary>
    public int SeedReturnValue => -(int)Code;
}
