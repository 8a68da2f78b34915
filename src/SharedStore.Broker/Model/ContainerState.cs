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

    /// <summary>Member processes admitted at once (1 … <see cref="BlockLockDescriptor.MaxMembersLimit"/>), chosen at
    /// create time; they take slots 0 … MaxMembers − 1.</summary>
    public required int MaxMembers
    {
        get => _slots.Length;
        init
        {
            _slots = new Membership?[value];
            Lines = BlockLockDescriptor.LinesFor(value);
        }
    }

    /// <summary>Reader lines of the container's lock records (64 slots each; the last slot of the last line is the
    /// broker's).</summary>
    public int Lines { get; private init; }

    /// <summary>Bytes of one lock record of the container.</summary>
    public int RecordSize => BlockLockDescriptor.RecordSize(Lines);

    /// <summary>The broker's own lock slot in the container's records.</summary>
    public int BrokerSlot => BlockLockDescriptor.BrokerSlot(Lines);

    private Membership?[] _slots = [];

    /// <summary>The member of each slot, or null (index = slot).</summary>
    public Membership?[] Slots => _slots;
    public Dictionary<string, ObjectState> Objects { get; } = new(StringComparer.Ordinal);
    public Dictionary<uint, ObjectState> ObjectsById { get; } = [];
    public List<Segment> Segments { get; } = [];
    public long Bytes { get; set; }

    /// <summary>The container's files when it is durable, else null.</summary>
    public DurableContainer? Durable { get; set; }

    /// <summary>When this broker owns the replicated container: its publisher and lease (docs/ARCHITECTURE.md §14).</summary>
    public ReplicatedOwner? ReplicationOwner { get; set; }

    /// <summary>When this broker is a replica of the container: its consumer and applier (read-only for members).</summary>
    public ReplicaFollower? ReplicationReplica { get; set; }

    /// <summary>Writes of members mark blocks dirty for the broker: durable, or the owner of a replicated container.</summary>
    public bool TracksDirtyBlocks => Durable is not null || ReplicationOwner is not null;

    public IEnumerable<Membership> Members => Slots.Where(m => m is not null)!;

    public int MemberCount => Slots.Count(m => m is not null);

    /// <summary>The slots that have a member.</summary>
    public SlotSet LiveSlots()
    {
        var live = new SlotSet();
        for (int s = 0; s < _slots.Length; s++)
        {
            if (_slots[s] is not null)
            {
                live.Add(s);
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
        MaxMembers = (uint)MaxMembers,
        LockLines = (uint)Lines,
        Replication = (ReplicationOwner?.Spec ?? ReplicationReplica?.Spec)?.Clone(),
    };
}
