namespace SharedStore.Broker;

/// <summary>One client process's membership of one container: its lock slot and its object joins. Guarded by the
/// model lock (<see cref="BrokerModel"/>), which also keeps the session → memberships table.</summary>
internal sealed class Membership
{
    public required ClientSession Session { get; init; }
    public required ContainerState Container { get; init; }
    public required int Slot { get; init; }
    public required bool CanWrite { get; init; }
    public Dictionary<uint, int> ObjectUses { get; } = [];
    public HashSet<uint> SentSegments { get; } = [];
}
