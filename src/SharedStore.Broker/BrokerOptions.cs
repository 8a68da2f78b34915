namespace SharedStore.Broker;

/// <summary>Broker settings. Units are bytes unless the name says otherwise.</summary>
internal sealed class BrokerOptions
{
    /// <summary>The socket to listen on (see <see cref="BrokerEndpoint"/> for the default).</summary>
    public string SocketPath { get; set; } = BrokerEndpoint.DefaultSocketPath;

    /// <summary>System-wide mode: the socket is 0666 and its directory 0755, so every user can connect and access is
    /// decided per container by group. Per-user mode (default): socket 0600, directory 0700.</summary>
    public bool SystemWide { get; set; }

    /// <summary>Most bytes of shared memory (object data plus lock tables) the broker hands out. Default: half of
    /// physical memory. Past it, object_create fails with NoResources, never a SIGBUS later.</summary>
    public long MemoryLimit { get; set; } = DefaultMemoryLimit();

    /// <summary>Most bytes of shared memory one Unix user may have in use at once (its objects, the lock tables made
    /// for them, its asynchronous channels); 0, the default, sets no quota beyond <see cref="MemoryLimit"/>.</summary>
    public long UidMemoryQuota { get; set; }

    /// <summary>Most connections one Unix user may have open at once; further ones are closed at accept, before a
    /// thread or any memory is spent on them. Default 2048 (room for a container of 1 024 member processes of one
    /// user, and their tools).</summary>
    public int MaxConnectionsPerUid { get; set; } = 2048;

    /// <summary>How long a new connection has to send its hello before the broker closes it. Default 10 s.</summary>
    public TimeSpan HelloTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long one reply may wait for room in a client's socket buffer before the broker takes the client for
    /// broken and closes it (a client that stops reading must not hold a broker thread). Default 10 s.</summary>
    public TimeSpan SendTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Data capacity of a shared segment, where objects below <see cref="DedicatedThreshold"/> live
    /// (1 &lt;&lt; 26, 64 MiB). Segments are sparse: only created objects take memory.</summary>
    public long SegmentCapacity { get; set; } = 1L << 26;

    /// <summary>Objects at least this large get a segment of their own (1 &lt;&lt; 24, 16 MiB).</summary>
    public long DedicatedThreshold { get; set; } = 1L << 24;

    /// <summary>Lock records per shared segment (1 &lt;&lt; 16; 8 MiB of records).</summary>
    public int LockRecordsPerSegment { get; set; } = 1 << 16;

    /// <summary>Block size of containers that do not choose one (1 &lt;&lt; 20, 1 MiB, as in the seed).</summary>
    public int DefaultBlockSize { get; set; } = 1 << 20;

    /// <summary>Objects at least this large are populated by two threads at create (1 &lt;&lt; 26, 64 MiB); smaller ones
    /// by the session thread alone. Either way before the reply (docs/ARCHITECTURE.md §7).</summary>
    public long ParallelPopulateThreshold { get; set; } = 1L << 26;

    /// <summary>The device scheduler that applies asynchronous writes to objects' memory-region devices (Auto:
    /// <see cref="SharedStore.Devices.DeviceSchedulers"/> decides). docs/ARCHITECTURE.md §9 has the measurements.</summary>
    public SharedStore.Devices.DeviceSchedulerKind AsyncScheduler { get; set; } = SharedStore.Devices.DeviceSchedulerKind.ThreadPool;

    /// <summary>Where the broker keeps its own state: the list of durable containers to restore at start. Default:
    /// <c>state/</c> beside the socket.</summary>
    public string? StateDirectory { get; set; }

    /// <summary>The NATS servers (comma-separated <c>nats://host:port</c>) of replicated containers that do not name
    /// their own (<c>--nats</c>; docs/ARCHITECTURE.md §14). Only root or the broker's own user may name others.</summary>
    public string? NatsUrl { get; set; }

    /// <summary>The interval of the replication pass of an owner (changed blocks to the stream). Default 5 ms: a
    /// write reaches the stream at most this long plus a publish after it completes, while the network is up.</summary>
    public TimeSpan ReplicationInterval { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>How long an ownership lease lives without a heartbeat (heartbeats every third of it). Default 10 s.</summary>
    public TimeSpan ReplicationLease { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Optional log file (the broker also logs to stderr).</summary>
    public string? LogPath { get; set; }

    private static long DefaultMemoryLimit()
    {
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return total > 0 ? total / 2 : 1L << 32;
    }
}
