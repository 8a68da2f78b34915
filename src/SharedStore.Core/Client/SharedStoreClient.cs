using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using SharedStore.Locks;
using SharedStore.Protocol;

namespace SharedStore;

/// <summary>
/// A client process's connection to the broker: the seed's "domain". Thread-safe. Containers and objects opened
/// through it map their memory directly; only control calls (create, join, leave, destroy) go to the broker, while
/// get, put and write work on the mapped memory and its block locks without a round trip.
/// </summary>
/// <remarks>When the broker dies, every call on a handle opened before fails with
/// <see cref="ErrorCode.BrokerUnavailable"/> at once (the socket reads EOF), threads blocked in lock waits fail within
/// 50 ms, and memory already mapped stays mapped: leases held stay readable. The client itself survives: its next call
/// (create, join, list…) connects again — to a restarted broker, or to one it starts when
/// <see cref="SharedStoreClientOptions.StartBrokerIfMissing"/> is set — and the program joins its containers again by
/// name (durable ones come back with the broker; memory-only ones do not). See README, "Surviving a broker restart".</remarks>
public sealed class SharedStoreClient : IDisposable
{
    private readonly SharedStoreClientOptions _options;
    private readonly string _path;
    private readonly Lock _connectGate = new();
    private readonly List<Container> _containers = [];
    private BrokerConnection _connection;
    private readonly List<BrokerConnection> _retired = []; // connections of lost brokers, disposed with the client
    private Devices.IDeviceAccessScheduler? _scheduler;
    private volatile bool _disposed;

    private SharedStoreClient(BrokerConnection connection, string path, SharedStoreClientOptions options)
    {
        _connection = connection;
        _path = path;
        _options = options;
    }

    /// <summary>The calling process's primary Unix group id: a group it may create containers for.</summary>
    public static long ProcessGroupId => Interop.Libc.getgid();

    /// <summary>The process id of the broker this client is (or was last) connected to, from its hello.</summary>
    public int BrokerPid => Volatile.Read(ref _connection).BrokerPid;

    /// <summary>The socket this client connects to.</summary>
    public string SocketPath => _path;

    /// <summary>True while the broker this client was last connected to is gone (it died or stopped) and no call has
    /// connected again yet.</summary>
    public bool IsBrokerLost => Volatile.Read(ref _connection).Lost;

    /// <summary>How many times this client connected to a broker: 1, plus one for each reconnection after a broker
    /// was lost. Handles opened before the last reconnection report <see cref="ErrorCode.BrokerUnavailable"/>.</summary>
    public int ConnectionGeneration => Volatile.Read(ref _connection).Generation;

    /// <summary>The connection in use now, lost or not (handles keep the one they were opened on).</summary>
    internal BrokerConnection Connection => Volatile.Read(ref _connection);

    /// <summary>This process's device scheduler for client-side asynchronous reads, created on first use.</summary>
    internal Devices.IDeviceAccessScheduler DeviceScheduler
    {
        get
        {
            if (Volatile.Read(ref _scheduler) is { } s)
            {
                return s;
            }

            lock (_connectGate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return _scheduler ??= Devices.DeviceSchedulers.Create(Devices.DeviceSchedulerKind.Auto, Devices.DeviceMode.None);
            }
        }
    }

    /// <summary>Rents <paramref name="length"/> bytes of shared memory for a zero-copy
    /// <see cref="SharedObject.AWrite(long, SharedBuffer, int)"/>. Waits while the staging area is full.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero, negative, or more than a quarter of the staging area.</exception>
    /// <exception cref="SharedStoreException">BrokerUnavailable.</exception>
    public SharedBuffer RentBuffer(int length)
    {
        var connection = Live();
        return connection.Channel.Rent(length, _options.AsyncSubmitTimeout);
    }

    /// <summary>Slots of this client's submission ring (opens the channel).</summary>
    public int AsyncRingSlots => Live().Channel.SlotCount;

    /// <summary>Asynchronous writes (<see cref="SharedObject.AWrite(long, ReadOnlySpan{byte})"/>) that their callers
    /// applied themselves because the blocks were free and nothing of this client was pending (born completed), since
    /// this client last connected to its broker. The others went through the ring.</summary>
    public long DirectAsyncWrites => Volatile.Read(ref _connection).DirectAsyncWrites;

    /// <summary>Waits until every asynchronous operation this client submitted so far has finished; false on timeout.</summary>
    public bool WaitForAsyncOperations(TimeSpan timeout) => Volatile.Read(ref _connection).WaitForAsyncOperations(timeout);

    internal SharedStoreClientOptions Options => _options;

    /// <summary>Connects to the broker (starting one first if <see cref="SharedStoreClientOptions.StartBrokerIfMissing"/>).</summary>
    /// <exception cref="SharedStoreException"><see cref="ErrorCode.BrokerUnavailable"/> when no broker answers (when
    /// this call started one, the message carries the broker's exit code and its last words); <see
    /// cref="ErrorCode.VersionMismatch"/> when it speaks another protocol version.</exception>
    /// <exception cref="ArgumentException"><see cref="SharedStoreClientOptions.ClientName"/> is not valid UTF-16 (a
    /// lone surrogate).</exception>
    public static SharedStoreClient Connect(SharedStoreClientOptions? options = null)
    {
        options ??= new SharedStoreClientOptions();
        WireStrings.ThrowIfNotValidUtf16(options.ClientName, nameof(options));
        string path = BrokerEndpoint.Resolve(options.SocketPath);
        return new SharedStoreClient(BrokerConnection.Open(path, options, generation: 1), path, options);
    }

    /// <summary>The live connection: the current one, or — when its broker is gone — a new one to whatever broker
    /// serves the socket now. Handles opened on the lost one stay lost.</summary>
    /// <exception cref="SharedStoreException">BrokerUnavailable when no broker answers (or could be started).</exception>
    internal BrokerConnection Live()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = Volatile.Read(ref _connection);
        if (!c.Lost)
        {
            return c;
        }

        lock (_connectGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            c = _connection;
            if (c.Lost)
            {
                var next = BrokerConnection.Open(_path, _options, c.Generation + 1);
                Volatile.Write(ref _connection, next);
                c.Retire(); // its socket is dead; its channel stays mapped so its operations still report their state
                _retired.Add(c);
                c = next;
            }

            return c;
        }
    }

    /// <summary>The seed's <c>container_create</c>: creates a container shared with Unix group
    /// <paramref name="groupId"/> and joins it.</summary>
    /// <exception cref="SharedStoreException">AlreadyExists (also: a replicated container of that name is owned by a
    /// live lease in the catalog; for a takeover, the lease was refreshed during its wait or another broker took it
    /// first); Timeout (a takeover did not read the stream within 2 minutes); PermissionDenied (not in the group and not root; a NATS URL named by a user other
    /// than root or the broker's); InvalidArgument (name, block size, replication combined with a durable path, no
    /// NATS server); NotFound (a replica of a container the catalog does not hold); NoResources (memory); IoError (NATS
    /// could not be reached or refused the stream, bucket or lease: the message says which); BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null or empty, or it, the durable path or a
    /// replication string is not valid UTF-16 (a lone surrogate); Replica and TakeOver both set.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The write policy is not a <see cref="WritePolicy"/> value.</exception>
    public Container CreateContainer(string name, long groupId, ContainerOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        options ??= new ContainerOptions();
        WireStrings.ThrowIfNotValidUtf16(options.DurablePath, nameof(options));
        ReplicationWire.Validate(options.Replication, nameof(options));
        if (!Enum.IsDefined(options.WritePolicy))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.WritePolicy, "the write policy is not a WritePolicy value");
        }

        if (options.MaxMembers is < 0 or > Regions.BlockLockDescriptor.MaxMembersLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxMembers, $"MaxMembers must be 0 (the default, 63) or 1 to {Regions.BlockLockDescriptor.MaxMembersLimit}");
        }

        var conn = Live();
        var r = conn.Call(new Request
        {
            ContainerCreate = new ContainerCreate
            {
                Name = name,
                GroupId = groupId,
                WritePolicy = (Protocol.WritePolicy)options.WritePolicy,
                BlockSize = (uint)options.BlockSize,
                DurablePath = options.DurablePath ?? "",
                MaxMembers = (uint)options.MaxMembers,
                Replication = ReplicationWire.ToWire(options.Replication),
            },
        }, _options.RequestTimeout, cancellationToken);
        return Track(new Container(this, conn, r.Response.Container));
    }

    /// <summary>The seed's <c>container_join</c>.</summary>
    /// <exception cref="SharedStoreException">NotFound; Destroyed (destroy is in progress); PermissionDenied;
    /// NoResources (the container's MaxMembers processes are members already); AlreadyExists (this client is already a member); BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public Container JoinContainer(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        var conn = Live();
        var r = conn.Call(new Request { ContainerJoin = new ContainerJoin { Name = name } }, _options.RequestTimeout, cancellationToken);
        return Track(new Container(this, conn, r.Response.Container));
    }

    /// <summary>
    /// Joins the container <paramref name="name"/> as soon as it exists: at once if it does, else when the broker
    /// creates it, joins it for this client and pushes the join (no polling and no second round trip: <c>name_wait</c>,
    /// docs/ARCHITECTURE.md §6). A broker that is down
    /// or restarting meanwhile is waited for too (the one case that retries, every 50 ms: there is no broker to push).
    /// </summary>
    /// <exception cref="SharedStoreException">Timeout when it did not appear in time; PermissionDenied; NoResources
    /// (63 members); AlreadyExists (this client is a member already); BrokerUnavailable only when the broker cannot be
    /// reached and the timeout ends.</exception>
    /// <exception cref="OperationCanceledException">The token fired.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public Container WaitForContainer(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        return NameWaitLoop.Run($"container '{name}'", timeout, cancellationToken, Live, 0, name, retryBrokerLoss: true, (conn, resp, _) => Track(new Container(this, conn, resp.Container)));
    }

    /// <summary>The seed's reader, <c>while ((con = container_join("con")) &lt; 0);</c>, without the polling:
    /// <see cref="WaitForContainer"/>. <paramref name="pollInterval"/> is ignored (kept for source compatibility).</summary>
    /// <exception cref="SharedStoreException">Timeout when it did not appear in time; PermissionDenied.</exception>
    public Container JoinContainerWhenCreated(string name, TimeSpan timeout, TimeSpan pollInterval = default, CancellationToken cancellationToken = default) =>
        WaitForContainer(name, timeout, cancellationToken);

    /// <summary>Every container the broker holds, with its members and objects (operator tooling: <c>sharedstore ls</c>).
    /// Any client may list; the list shows names, groups, pids and sizes, never data.</summary>
    /// <exception cref="SharedStoreException"><see cref="ErrorCode.BrokerUnavailable"/>: no broker, or it died;
    /// <see cref="ErrorCode.Timeout"/>: no answer within <see cref="SharedStoreClientOptions.RequestTimeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public IReadOnlyList<ContainerListing> ListContainers(CancellationToken cancellationToken = default) =>
        [.. Call(new Request { List = new ListRequest() }, _options.RequestTimeout, cancellationToken).Response.List.Containers.Select(c => new ContainerListing(c))];

    /// <summary>Who holds or waits on each block of an object (operator tooling: <c>sharedstore holders</c>). The caller
    /// must be allowed to join the container; it need not be a member.</summary>
    /// <exception cref="SharedStoreException"><see cref="ErrorCode.NotFound"/>: no such container or object;
    /// <see cref="ErrorCode.PermissionDenied"/>: the caller may not join the container;
    /// <see cref="ErrorCode.InvalidArgument"/>: a name is not a valid name; <see cref="ErrorCode.BrokerUnavailable"/>;
    /// <see cref="ErrorCode.Timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public ObjectHolders Holders(string container, string objectName, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(container);
        ArgumentNullException.ThrowIfNull(objectName);
        return new(Call(new Request { Holders = new HoldersRequest { ContainerName = container, ObjectName = objectName } }, _options.RequestTimeout, cancellationToken).Response.Holders);
    }

    /// <summary>The broker's pid, uptime, counts, memory in use and metrics (operator tooling: <c>sharedstore broker
    /// status</c> and <c>stats</c>).</summary>
    /// <exception cref="SharedStoreException"><see cref="ErrorCode.BrokerUnavailable"/>; <see cref="ErrorCode.Timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public BrokerStatus Status(CancellationToken cancellationToken = default) =>
        new(Call(new Request { Status = new StatusRequest() }, _options.RequestTimeout, cancellationToken).Response.Status);

    /// <summary>The broker's table of containers, objects and members, as it came off the wire (for tests).</summary>
    internal ListReply ListRaw() => Call(new Request { List = new ListRequest() }, _options.RequestTimeout, default).Response.List;

    /// <summary>One round trip on the live connection (reconnecting when its broker was lost).</summary>
    internal (Response Response, List<SafeFd> Fds) Call(Request request, TimeSpan timeout, CancellationToken cancellationToken, bool brokerWaits = false) =>
        Live().Call(request, timeout, cancellationToken, brokerWaits);

    /// <summary>Disconnects. The broker releases every membership, lock and use of this client when the socket closes.
    /// Mappings are unmapped, except those under leases this process still holds: they stay mapped (readable) until
    /// the process exits, so a lease never points at unmapped memory.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        List<Container> open;
        lock (_containers)
        {
            open = [.. _containers];
        }

        foreach (var c in open)
        {
            c.Abandon();
        }

        lock (_connectGate)
        {
            _disposed = true;
            _connection.Dispose();
            foreach (var r in _retired)
            {
                r.Dispose();
            }

            _retired.Clear();
            _scheduler?.Dispose();
        }
    }

    internal void Untrack(Container c)
    {
        lock (_containers)
        {
            _containers.Remove(c);
        }
    }

    private Container Track(Container c)
    {
        lock (_containers)
        {
            _containers.Add(c);
        }

        return c;
    }
}
