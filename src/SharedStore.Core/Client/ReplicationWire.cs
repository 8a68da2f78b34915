namespace SharedStore;

/// <summary>The one conversion between <see cref="ReplicationOptions"/> and the wire's <c>Replication</c> message
/// (container_create and ContainerInfo; docs/ARCHITECTURE.md §14).</summary>
internal static class ReplicationWire
{
    /// <exception cref="ArgumentException">A string is not valid UTF-16.</exception>
    /// <exception cref="ArgumentOutOfRangeException">StreamReplicas is negative or above 5 (JetStream's limit).</exception>
    /// <exception cref="ArgumentException">Replica and TakeOver both set.</exception>
    public static void Validate(ReplicationOptions? r, string paramName)
    {
        if (r is null)
        {
            return;
        }

        WireStrings.ThrowIfNotValidUtf16(r.NatsUrl, paramName);
        WireStrings.ThrowIfNotValidUtf16(r.Stream, paramName);
        WireStrings.ThrowIfNotValidUtf16(r.Bucket, paramName);
        if (r.Replica && r.TakeOver)
        {
            throw new ArgumentException("a replication is a replica or a takeover (of the ownership), not both", paramName);
        }

        if (r.StreamReplicas is < 0 or > 5)
        {
            throw new ArgumentOutOfRangeException(paramName, r.StreamReplicas, "StreamReplicas must be 0 (1) to 5");
        }
    }

    public static Protocol.Replication? ToWire(ReplicationOptions? r) => r is null ? null : new Protocol.Replication
    {
        NatsUrl = r.NatsUrl ?? "",
        Stream = r.Stream ?? "",
        Bucket = r.Bucket ?? "",
        StreamReplicas = (uint)r.StreamReplicas,
        Replica = r.Replica,
        TakeOver = r.TakeOver,
    };

    public static ReplicationOptions? FromWire(Protocol.Replication? r) => r is null ? null : new ReplicationOptions(r.NatsUrl)
    {
        Replica = r.Replica,
        TakeOver = r.TakeOver,
        Stream = r.Stream,
        Bucket = r.Bucket,
        StreamReplicas = (int)r.StreamReplicas,
    };
}
