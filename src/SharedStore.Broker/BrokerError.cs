namespace SharedStore.Broker;

/// <summary>A request the broker refuses; becomes a Response with the error code. Expected outcome, not a bug. A
/// <see cref="SharedStoreException"/>, the one error root (ErrorReplies.cs turns any of them into a reply).</summary>
internal sealed class BrokerError(ErrorCode code, string message) : SharedStoreException(code, message);
