using SharedStore.Locks;
using SharedStore.Regions;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Visits one block's lock record (<see cref="ContainerState.ForEachRecord"/>).</summary>
internal unsafe delegate void RecordVisitor(ObjectState o, long block, BlockLockRecord* rec);

/// <summary>One container of the model. Guarded by the model lock (<see cref="BrokerModel"/>).</summary>
internal sealed class ContainerState
{
    public required uint Id { get; init; }
    public required string Name { get; init; }
    public required long GroupId { get; init; }
    public required uint CreatorUid { get; init; }
    public required Protocol.WritePolicy WritePolicy { get; init; }
    public required int BlockSize { get; init; }
    public bool Destroying { get; set; }
    public Membership?[] Slots { get; } = new Membership?[BlockLockDescriptor.MaxSlots];
    public Dictionary<string, ObjectState> Objects { get; } = new(StringComparer.Ordinal);
    public Dictionary<uint, ObjectState> ObjectsById { get; } = [];
    public List<Segment> Segments { get; } = [];
    public long Bytes { get; set; }

    /// <summary>The container's files when it is durable, else null.</summary>
    public DurableContainer? Durable { get; set; }

    public IEnumerable<Membership> Members => Slots.Where(m => m is not null)!;

    public int MemberCount => Slots.Count(m => m is not null);

    /// <summary>Bit s set: slot s has a member.</summary>
    public ulong LiveSlots()
    {
        ulong live = 0;
        for (int s = 0; s < BlockLockDescriptor.MaxMembers; s++)
        {
            if (Slots[s] is not null)
            {
                live |= 1UL << s;
            }
        }

        return live;
    }

    /// <summary>Every block of every object of the container, with its lock record (scrub, repair, wake-up).</summary>
    public unsafe void ForEachRecord(RecordVisitor visit)
    {
        foreach (var o in ObjectsById.Values)
        {
            for (long b = 0; b < o.BlockCount; b++)
            {
                visit(o, b, o.Segment.Record(o.RecordIndex + b));
            }
        }
    }

    public ContainerInfo Describe(Membership? m) => new()
    {
        ContainerId = Id,
        Name = Name,
        GroupId = GroupId,
        WritePolicy = WritePolicy,
        BlockSize = (uint)BlockSize,
        MemberSlot = m is null ? 0u : (uint)m.Slot,
        CanWrite = m?.CanWrite ?? false,
        CreatorUid = (int)CreatorUid,
        DurablePath = Durable?.Directory ?? "",
    };
}
