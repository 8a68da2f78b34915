namespace SharedStore;

/// <summary>How a <see cref="SharedStoreClient"/> finds (and possibly starts) its broker.</summary>
public sealed class SharedStoreClientOptions
{
    /// <summary>The broker's socket. Default: <see cref="BrokerEndpoint.DefaultSocketPath"/>.</summary>
    public string? SocketPath { get; set; }

    /// <summary>When no broker answers, start one as a detached background process and connect to it. Default
    /// false: the connect fails with <see cref="ErrorCode.BrokerUnavailable"/>.</summary>
    public bool StartBrokerIfMissing { get; set; }

    /// <summary>The broker to start: a <c>SharedStore.Broker.dll</c> (run with the current dotnet host) or an
    /// executable. Default: the environment variable <c>SHAREDSTORE_BROKER</c>, else <c>SharedStore.Broker.dll</c>
    /// beside the application.</summary>
    public string? BrokerPath { get; set; }

    /// <summary>Extra arguments for a broker this client starts (e.g. <c>--memory-limit</c>).</summary>
    public IList<string> BrokerArguments { get; } = [];

    /// <summary>How long to wait for a broker this client started to accept connections. Default 15 s.</summary>
    public TimeSpan StartTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Timeout of calls that do not take one (broker round trips that never block). Default 30 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a lock waiter spins before it sleeps on the futex. Default 30 µs: longer than one futex
    /// wake of a halted vCPU on the reference machine (about 22 µs).</summary>
    public TimeSpan LockSpin { get; set; } = TimeSpan.FromMicroseconds(30);

    /// <summary>Tests only: the longest single futex sleep of a waiter (default 50 ms). Lengthened, a wait ends only
    /// through a real FUTEX_WAKE (or its timeout), so a lost wake-up shows instead of hiding behind the slice.</summary>
    internal TimeSpan? TestSleepSlice { get; set; }

    /// <summary>A name for this client in the broker's logs.</summary>
    public string ClientName { get; set; } = AppDomain.CurrentDomain.FriendlyName;

    /// <summary>What an asynchronous submission does when the ring or staging area is full. Default: wait.</summary>
    public AsyncFullMode AsyncFullMode { get; set; } = AsyncFullMode.Wait;

    /// <summary>How long a submission waits for space in <see cref="AsyncFullMode.Wait"/> mode before it throws
    /// <see cref="ErrorCode.Timeout"/> (nothing submitted). Default: infinite. A chunked write (larger than a quarter
    /// of the staging area) is bound by it only until its first chunk is in the ring: from then on the broker holds the
    /// range's locks for the rest, so the call waits for staging as long as the broker takes.</summary>
    public TimeSpan AsyncSubmitTimeout { get; set; } = Timeout.InfiniteTimeSpan;

    /// <summary>Where <see cref="SharedObject.ARead(long, Memory{byte})"/> copies. Default: this process.</summary>
    public AsyncReadPath AsyncReadPath { get; set; } = AsyncReadPath.Client;

    /// <summary>Who copies an <see cref="SharedObject.AWrite(long, ReadOnlySpan{byte})"/> larger than a ring slot's
    /// inline bytes into the object. Default: this process, when it can without waiting (docs/ARCHITECTURE.md §9.5).</summary>
    public AsyncWritePath AsyncWritePath { get; set; } = AsyncWritePath.Client;

    /// <summary>Submission ring slots (a power of two, 64 to 1 Mi; 0 = 16 Ki). Each slot is 128 bytes.</summary>
    public int AsyncRingSlots { get; set; }

    /// <summary>Staging bytes for writes larger than a slot and for rented buffers (1 MiB to 1 GiB; 0 = 8 MiB). Writes above a quarter of it are chunked.</summary>
    public long AsyncStagingBytes { get; set; }
}

/// <summary>Who may write a container's objects (the seed's <c>write_policy</c>).</summary>
public enum WritePolicy
{
    /// <summary>Every member writes (the default).</summary>
    AllMembers = 0,

    /// <summary>Only the creating user (and root) writes. Other members receive a read-only descriptor and map the
    /// data read-only, so the kernel enforces it; their write calls fail with PermissionDenied.</summary>
    CreatorOnly = 1,
}

/// <summary>Options of <see cref="SharedStoreClient.CreateContainer"/>.</summary>
public sealed class ContainerOptions
{
    /// <summary>Who may write. Default <see cref="WritePolicy.AllMembers"/>.</summary>
    public WritePolicy WritePolicy { get; set; } = WritePolicy.AllMembers;

    /// <summary>Lock granularity: a power of two from 4 KiB to 1 GiB. Default 0: the broker's default (1 MiB).</summary>
    public int BlockSize { get; set; }

    /// <summary>Null (the default): memory only. Otherwise the container is <b>durable</b>: an existing, empty
    /// directory on the broker's machine that the calling user may write; the broker keeps the objects' blocks there
    /// (written back in the background; <see cref="Container.Flush(TimeSpan, CancellationToken)"/> makes them durable)
    /// and restores the container when it restarts. Disk space: twice the objects' size (shadow slots).</summary>
    public string? DurablePath { get; set; }

    /// <summary>Member processes the container admits at once: 1 to 4 095. Default 0: 63. The process over it gets
    /// <see cref="ErrorCode.NoResources"/> from its join. Each block lock record has one byte per possible member,
    /// in 64-byte lines: 63 members make 128-byte records, 1 024 make 1 152-byte ones (docs/ARCHITECTURE.md §3.2);
    /// a writer reads only the lines that readers have used.</summary>
    public int MaxMembers { get; set; }

    /// <summary>Null (the default): the container lives on this broker only. Otherwise it is <b>replicated</b> over
    /// NATS JetStream (docs/ARCHITECTURE.md §14): as the owner (<see cref="ReplicationOptions.Replica"/> false) the
    /// broker publishes every changed block and <see cref="Container.Flush(TimeSpan, CancellationToken)"/> returns once
    /// the stream holds every write completed before it; as a replica the broker joins the container of that name from
    /// the stream's catalog (the other options are then the owner's, not these) and its members read it, read-only.
    /// Not combined with <see cref="DurablePath"/>.</summary>
    public ReplicationOptions? Replication { get; set; }
}

/// <summary>How a container is replicated between brokers over NATS JetStream (<see cref="ContainerOptions.Replication"/>).</summary>
/// <param name="NatsUrl">Null or empty: the broker's own <c>--nats</c> servers. Otherwise comma-separated
/// <c>nats://host:port</c> URLs; only root or the broker's own user may name servers other than the broker's
/// (PermissionDenied), so a root broker is never pointed at a server by its users.</param>
public sealed record ReplicationOptions(string? NatsUrl = null)
{
    /// <summary>True: this broker is a replica of the container of that name, created by its owner on another broker.</summary>
    public bool Replica { get; init; }

    /// <summary>True (failover; not with <see cref="Replica"/>): this broker takes the ownership of the container of
    /// that name from an owner that died (docs/ARCHITECTURE.md §14, "Failover"). The broker waits until it has seen
    /// the ownership lease unchanged for 1.5 of the lease's times (an owner that is alive refreshes it every third: the
    /// create then fails with AlreadyExists), takes it with a revision-checked update whose revision is the new epoch,
    /// rebuilds the container from the stream (every block flushed by the old owner, and any published after), and
    /// from then on owns it: its members write, and the replicas follow the new epoch. Writes the old owner never
    /// published are lost. The other options are the catalog's, as for a replica. The call takes at least 1.5 lease
    /// times (15 s with the default lease): give the client a request timeout above that.</summary>
    public bool TakeOver { get; init; }

    /// <summary>The JetStream stream of block messages (null: <c>SHAREDSTORE</c>). Owner and replicas must agree.</summary>
    public string? Stream { get; init; }

    /// <summary>The key-value bucket of the catalog and the ownership leases (null: <c>SHAREDSTORE</c>).</summary>
    public string? Bucket { get; init; }

    /// <summary>The replication factor of the stream and bucket when the owner creates them (0: 1). With 3 on a
    /// three-node cluster, <see cref="Container.Flush(TimeSpan, CancellationToken)"/> returns once a majority holds
    /// the blocks.</summary>
    public int StreamReplicas { get; init; }
}
