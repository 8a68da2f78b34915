namespace SharedStore.Broker;

/// <summary>A request the broker refuses; becomes a Response with the error code. Expected outcome, not a bug.</summary>
internal sealed class BrokerError(ErrorCode code, string message) : Exception(message)
{
    public ErrorCode Code { get; } = code;
}
