namespace SharedStore.Protocol;

/// <summary>
/// The one mapping between the public <see cref="SharedStore.ErrorCode"/> and the wire's
/// <see cref="Protocol.ErrorCode"/>. The two enums have the same numbers, value for value, so the mapping is a checked
/// identity: a number one side does not name (a newer peer's code) becomes <see cref="SharedStore.ErrorCode.Internal"/>
/// rather than an unnamed enum value. Every place that puts a code on the wire or takes one off it goes through here;
/// WireErrorTests pins every value of both enums.
/// </summary>
internal static class WireErrors
{
    /// <summary>The wire code for <paramref name="code"/>.</summary>
    public static Protocol.ErrorCode ToWire(SharedStore.ErrorCode code) =>
        Enum.IsDefined(code) && Enum.IsDefined((Protocol.ErrorCode)(int)code) ? (Protocol.ErrorCode)(int)code : Protocol.ErrorCode.Internal;

    /// <summary>The public code for a code received on the wire.</summary>
    public static SharedStore.ErrorCode FromWire(Protocol.ErrorCode code) =>
        Enum.IsDefined(code) && Enum.IsDefined((SharedStore.ErrorCode)(int)code) ? (SharedStore.ErrorCode)(int)code : SharedStore.ErrorCode.Internal;
}
