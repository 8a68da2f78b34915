using System.Collections.ObjectModel;
using SharedStore.Protocol;

namespace SharedStore;

/// <summary>One container as the broker sees it (<see cref="SharedStoreClient.ListContainers"/>, <c>sharedstore ls</c>).</summary>
public sealed class ContainerListing
{
    internal ContainerListing(ContainerEntry e)
    {
        Name = e.Info.Name;
        GroupId = e.Info.GroupId;
        WritePolicy = (WritePolicy)(int)e.Info.WritePolicy;
        BlockSize = e.Info.BlockSize;
        DurablePath = e.Info.DurablePath.Length == 0 ? null : e.Info.DurablePath;
        MemberPids = new ReadOnlyCollection<int>([.. e.MemberPids]);
        Bytes = (long)e.Bytes;
        Objects = new ReadOnlyCollection<ObjectListing>([.. e.Objects.Select(o => new ObjectListing(o))]);
        Replication = ReplicationWire.FromWire(e.Info.Replication);
        ReplicationLagMs = e.ReplicationLagMs;
    }

    /// <summary>The container's name.</summary>
    public string Name { get; }

    /// <summary>The Unix group whose members may join it.</summary>
    public long GroupId { get; }

    /// <summary>Who may write.</summary>
    public WritePolicy WritePolicy { get; }

    /// <summary>Bytes per block (the lock granularity).</summary>
    public uint BlockSize { get; }

    /// <summary>The directory of a durable container on the broker's side; null for a memory-only one.</summary>
    public string? DurablePath { get; }

    /// <summary>The pid of every member process.</summary>
    public IReadOnlyList<int> MemberPids { get; }

    /// <summary>Shared memory the container holds (objects rounded to pages, plus lock tables).</summary>
    public long Bytes { get; }

    /// <summary>Its objects.</summary>
    public IReadOnlyList<ObjectListing> Objects { get; }

    /// <summary>How it is replicated (the broker's resolved settings: stream, bucket, replica or owner); null when it
    /// is not.</summary>
    public ReplicationOptions? Replication { get; }

    /// <summary>A replica's lag: milliseconds from its last applied message's stream timestamp to the apply (0 for an
    /// owner and for a container that is not replicated).</summary>
    public double ReplicationLagMs { get; }
}

/// <summary>One object of a <see cref="ContainerListing"/>.</summary>
public sealed class ObjectListing
{
    internal ObjectListing(ObjectEntry e)
    {
        Name = e.Info.Name;
        Size = (long)e.Info.Size;
        BlockCount = e.Info.BlockCount;
        UseCount = e.UseCount;
    }

    /// <summary>The object's name.</summary>
    public string Name { get; }

    /// <summary>Its size in bytes.</summary>
    public long Size { get; }

    /// <summary>Its number of blocks.</summary>
    public uint BlockCount { get; }

    /// <summary>How many joins of member processes use it.</summary>
    public uint UseCount { get; }
}

/// <summary>Who holds or waits on the blocks of one object (<see cref="SharedStoreClient.Holders"/>,
/// <c>sharedstore holders</c>), read by the broker from the lock records at one instant.</summary>
public sealed class ObjectHolders
{
    internal ObjectHolders(HoldersReply r)
    {
        BlockSize = r.BlockSize;
        BlockCount = (long)r.BlockCount;
        Blocks = new ReadOnlyCollection<BlockHolding>([.. r.Blocks.Select(b => new BlockHolding(b))]);
    }

    /// <summary>Bytes per block.</summary>
    public uint BlockSize { get; }

    /// <summary>The object's number of blocks.</summary>
    public long BlockCount { get; }

    /// <summary>Every block with a reader, an owner or a waiting writer, ascending; blocks nobody holds are left out.</summary>
    public IReadOnlyList<BlockHolding> Blocks { get; }
}

/// <summary>The holders of one block.</summary>
public sealed class BlockHolding
{
    internal BlockHolding(Protocol.BlockHolders b)
    {
        Block = (long)b.Block;
        Torn = b.Torn;
        Readers = new ReadOnlyCollection<BlockHolder>([.. b.Readers.Select(h => new BlockHolder(h))]);
        Writer = b.Writer is null ? null : new BlockHolder(b.Writer);
        Waiting = new ReadOnlyCollection<BlockHolder>([.. b.Waiting.Select(h => new BlockHolder(h))]);
    }

    /// <summary>The block's index in the object.</summary>
    public long Block { get; }

    /// <summary>A writer died inside the block: its bytes may be half written until someone writes it again.</summary>
    public bool Torn { get; }

    /// <summary>One entry per member with reads held (<see cref="BlockHolder.Count"/> reads).</summary>
    public IReadOnlyList<BlockHolder> Readers { get; }

    /// <summary>The owner, if any: <see cref="BlockHolder.Active"/> when it writes, else it waits for the readers to drain.</summary>
    public BlockHolder? Writer { get; }

    /// <summary>Members with a thread waiting to become owner.</summary>
    public IReadOnlyList<BlockHolder> Waiting { get; }
}

/// <summary>One member's part in a block lock.</summary>
public sealed class BlockHolder
{
    internal BlockHolder(Protocol.LockHolder h)
    {
        Slot = h.Slot;
        Pid = h.Pid;
        ProcessName = h.ProcessName;
        Count = h.Count;
        Active = h.Active;
    }

    /// <summary>The member's slot in the container's block locks.</summary>
    public uint Slot { get; }

    /// <summary>The member's pid; 0 when the slot has no member (a stale bit the broker has not cleared yet).</summary>
    public int Pid { get; }

    /// <summary>/proc/PID/comm as the broker reads it; empty when it could not.</summary>
    public string ProcessName { get; }

    /// <summary>Reads held (readers only).</summary>
    public uint Count { get; }

    /// <summary>The owner writes now (writer only); false while it waits for readers to drain.</summary>
    public bool Active { get; }
}

/// <summary>The broker's state and metrics (<see cref="SharedStoreClient.Status"/>, <c>sharedstore broker status</c>
/// and <c>stats</c>).</summary>
public sealed class BrokerStatus
{
    internal BrokerStatus(StatusReply s)
    {
        BrokerPid = s.BrokerPid;
        Uptime = TimeSpan.FromMilliseconds(s.UptimeMs);
        SocketPath = s.SocketPath;
        ContainerCount = (int)s.ContainerCount;
        ObjectCount = (int)s.ObjectCount;
        ObjectBytes = (long)s.ObjectBytes;
        BytesInUse = (long)s.BytesInUse;
        MemoryLimit = (long)s.MemoryLimit;
        SessionCount = (int)s.SessionCount;
        Metrics = new ReadOnlyCollection<BrokerMetric>([.. s.Metrics.Select(m => new BrokerMetric(m.Name, m.Unit, m.Tags, m.Value))]);
    }

    /// <summary>The broker's pid.</summary>
    public int BrokerPid { get; }

    /// <summary>Time since the broker started.</summary>
    public TimeSpan Uptime { get; }

    /// <summary>The socket it serves.</summary>
    public string SocketPath { get; }

    /// <summary>Containers it holds.</summary>
    public int ContainerCount { get; }

    /// <summary>Objects it holds.</summary>
    public int ObjectCount { get; }

    /// <summary>The sum of object sizes.</summary>
    public long ObjectBytes { get; }

    /// <summary>Shared memory handed out (page-rounded objects plus lock tables).</summary>
    public long BytesInUse { get; }

    /// <summary>Its memory limit (<c>--memory-limit</c>).</summary>
    public long MemoryLimit { get; }

    /// <summary>Connected clients.</summary>
    public int SessionCount { get; }

    /// <summary>Current values of the broker's SharedStore.Broker meter instruments.</summary>
    public IReadOnlyList<BrokerMetric> Metrics { get; }
}

/// <summary>One instrument value of <see cref="BrokerStatus.Metrics"/>.</summary>
/// <param name="Name">The instrument, e.g. <c>sharedstore.broker.operations</c>.</param>
/// <param name="Unit">Its unit.</param>
/// <param name="Tags"><c>key=value,…</c>, or empty.</param>
/// <param name="Value">Counters: the total since the broker started; gauges: the current value.</param>
public sealed record BrokerMetric(string Name, string Unit, string Tags, double Value);
