using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>One object of the model. Guarded by the model lock (<see cref="BrokerModel"/>), apart from what it hands
/// to others: its memory and lock records (shared with the clients), its <see cref="Ledger"/> (its own lock) and
/// its <see cref="AsyncTarget"/> (used by appliers while their session keeps the object joined).</summary>
internal sealed class ObjectState
{
    public required uint Id { get; init; }
    public required string Name { get; init; }
    public required long Size { get; init; }
    public required Segment Segment { get; init; }
    public required long DataOffset { get; init; }
    public required long RecordIndex { get; init; }
    public required long BlockCount { get; init; }

    /// <summary>The uid whose memory quota the object's pages are charged to (its creator).</summary>
    public required uint ChargedUid { get; init; }

    /// <summary>Some of the object's pages were not reserved before its create (see <see cref="Segment.PagesReserved"/>):
    /// the create populates them in the broker's mapping.</summary>
    public bool FreshPages { get; init; } = true;

    public bool Destroying { get; set; }

    /// <summary>Joins by all memberships (a membership may join an object several times).</summary>
    public int UseCount { get; set; }

    /// <summary>The broker's view for asynchronous writes (created on first use, under the model lock).</summary>
    public AsyncTarget? AsyncTarget { get; set; }

    /// <summary>The object's file when its container is durable, else null. Set and cleared only by the model's
    /// owners (<see cref="ContainerRegistry"/>), never by the durable store.</summary>
    public DurableObject? Durable { get; set; }

    /// <summary>What the broker's own lock slot holds on the object's blocks (appliers and write-back lock through it).</summary>
    public BrokerSlotLedger Ledger => LazyInitializer.EnsureInitialized(ref _ledger, () => new BrokerSlotLedger(BlockCount, BlockLockDescriptor.BrokerSlot(Segment.Lines)));

    private BrokerSlotLedger? _ledger;

    public ObjectInfo Describe() => new()
    {
        ObjectId = Id,
        Name = Name,
        Size = (ulong)Size,
        SegmentId = Segment.Id,
        DataOffset = (ulong)DataOffset,
        LockOffset = (ulong)(LockSegmentDescriptor.RecordsOffset + (RecordIndex * Segment.RecordSize)),
        BlockCount = (uint)BlockCount,
    };
}
