using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// The broker's state, as the sessions and the server see it: one entry point per request, each delegated to the class
/// that owns it (docs/ARCHITECTURE.md, "The broker's classes"):
/// <list type="bullet">
/// <item><see cref="BrokerModel"/>: containers, objects, memberships, and the model lock that guards them;</item>
/// <item><see cref="ContainerRegistry"/>: names and lifecycle (create, join, leave, destroy), restore, async targets;</item>
/// <item><see cref="AccessPolicy"/>: who may do what;</item>
/// <item><see cref="SegmentPlacement"/>: where objects go and the memory limit;</item>
/// <item><see cref="LockRepair"/> and <see cref="SessionRecovery"/>: lock records of members that left or died;</item>
/// <item><see cref="BrokerIntrospection"/>: status figures, list, holders;</item>
/// <item><see cref="NameWaiters"/>: sessions waiting for a name to be created (a leaf lock of its own);</item>
/// <item><see cref="DurableStore"/>: the files of durable containers (its own locks, inside the model lock).</item>
/// </list>
/// Lock order, outermost first: <see cref="DurableContainer.FlushGate"/>, the model lock, the durable catalog, a
/// <see cref="DurableObject.Gate"/>; then leaves (<see cref="LockOrder"/> checks it on every acquisition).
/// </summary>
internal sealed class BrokerState : IDisposable
{
    private readonly BrokerModel _model = new();
    private readonly BrokerOptions _options;
    private readonly MemoryBudget _memory;
    private readonly DurableStore? _durable;
    private readonly ReplicationService _replication;
    private readonly ContainerRegistry _registry;
    private readonly LockRepair _repair;
    private readonly SessionRecovery _recovery;
    private readonly BrokerIntrospection _introspection;

    public BrokerState(BrokerOptions options, BrokerIdentity identity, ILogger? logger = null, BrokerMetrics? metrics = null)
    {
        logger ??= NullLogger.Instance;
        _durable = new DurableStore(BrokerFolders.StateDirectory(options), logger);
        _options = options;
        _memory = new MemoryBudget(options.MemoryLimit, options.UidMemoryQuota);
        Identity = identity;
        _repair = new LockRepair(_model, logger);
        _replication = new ReplicationService(options, logger);
        _registry = new ContainerRegistry(_model, options, new SegmentPlacement(_model, options, _memory, identity), _repair, _durable, _replication, logger);
        _registry.ObjectCreatedByReplica = (containerId, name) => Names.Created(containerId, name);
        _recovery = new SessionRecovery(_model, _registry, _repair, metrics);
        _introspection = new BrokerIntrospection(_model, _memory);
    }

    public BrokerIdentity Identity { get; }

    public long MemoryLimit => _options.MemoryLimit;

    public long BytesInUse => _memory.InUse;

    /// <summary>Shared memory charged against the memory limit and the per-uid quotas (objects, lock tables, channels).</summary>
    public MemoryBudget Memory => _memory;

    /// <summary>Durable figures, for metrics and benches.</summary>
    public DurableStore? Durable => _durable;

    /// <summary>Replication figures (bytes published and applied), for metrics and benches.</summary>
    public ReplicationService Replication => _replication;

    // ---- Requests (ContainerRegistry) ------------------------------------------------------------------------

    public (ContainerInfo Info, Membership Member) CreateContainer(ClientSession session, ContainerCreate req) => _registry.CreateContainer(session, req);

    public (ContainerInfo Info, Membership Member) JoinContainer(ClientSession session, ContainerJoin req) => _registry.JoinContainer(session, req);

    public void LeaveContainer(ClientSession session, uint containerId) => _registry.LeaveContainer(session, containerId);

    /// <summary>A destroy that times out or is canceled puts the container back (joins work again): the waiters for its
    /// name, which found it "being destroyed", are told it exists (issue 17).</summary>
    public void DestroyContainer(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token)
    {
        string? name = _registry.NameOf(session, containerId, null);
        try
        {
            _registry.DestroyContainer(session, containerId, timeout, token);
        }
        catch (BrokerError e) when (e.Code is ErrorCode.Timeout or ErrorCode.Canceled && name is not null)
        {
            Names.Created(0, name); // after the model lock was released, as for a create (NameWaiters)
            throw;
        }
    }

    public (ObjectInfo Info, SegmentGrant Grant) CreateObject(ClientSession session, ObjectCreate req) => _registry.CreateObject(session, req);

    public (ObjectInfo Info, SegmentGrant Grant) JoinObject(ClientSession session, ObjectJoin req) => _registry.JoinObject(session, req);

    public void LeaveObject(ClientSession session, ObjectLeave req) => _registry.LeaveObject(session, req);

    public bool TryDestroyObjectNow(ClientSession session, ObjectDestroy req) => _registry.TryDestroyObjectNow(session, req);

    /// <summary>As <see cref="DestroyContainer"/>: an object put back by a timed-out or canceled destroy is announced
    /// to its name's waiters.</summary>
    public void DestroyObject(ClientSession session, ObjectDestroy req, TimeSpan timeout, CancellationToken token)
    {
        string? name = _registry.NameOf(session, req.ContainerId, req.ObjectId);
        try
        {
            _registry.DestroyObject(session, req, timeout, token);
        }
        catch (BrokerError e) when (e.Code is ErrorCode.Timeout or ErrorCode.Canceled && name is not null)
        {
            Names.Created(req.ContainerId, name);
            throw;
        }
    }

    public SegmentGrant FetchSegment(ClientSession session, SegmentFetch req) => _registry.FetchSegment(session, req);

    public void Flush(ClientSession session, uint containerId, TimeSpan timeout, CancellationToken token) =>
        _registry.Flush(session, containerId, timeout, token);

    public List<RestoreReport> RestoreDurable() => _registry.RestoreDurable();

    public ErrorCode ResolveAsync(ClientSession session, uint containerId, uint objectId, out AsyncTarget? target, out bool canWrite) =>
        _registry.ResolveAsync(session, containerId, objectId, out target, out canWrite);

    public bool IsMember(ClientSession session) => _registry.IsMember(session);

    // ---- Name waits (NameWaiters; issue 17) ------------------------------------------------------------------

    /// <summary>Sessions waiting for names to be created. Its lock is a leaf: it is never held while the model lock
    /// is taken (the existence check runs after the registration, outside it).</summary>
    public NameWaiters Names { get; } = new();

    /// <summary>Whether the container or object a name wait asks for exists now (<see cref="ContainerRegistry.NameExists"/>).</summary>
    public bool NameExists(ClientSession session, NameWait req) => _registry.NameExists(session, req);

    // ---- Lock records and recovery (LockRepair, SessionRecovery) ----------------------------------------------

    public LockCheckReply CheckLock(ClientSession session, LockCheck req) => _repair.CheckLock(session, req);

    public void ScrubSession(ClientSession session) => _recovery.ScrubSession(session);

    public void SessionClosed(ClientSession session) => _recovery.SessionClosed(session);

    public void WakeAllSleepers() => _repair.WakeAllSleepers();

    // ---- Introspection ------------------------------------------------------------------------------------

    public BrokerSnapshot Snapshot(int sessions) => _introspection.Snapshot(sessions);

    public HoldersReply Holders(ClientSession session, HoldersRequest req) => _introspection.Holders(session, req);

    public ListReply List() => _introspection.List();

    public void Dispose()
    {
        _durable?.Dispose(); // write-back stops (files stay) before the memory it reads goes
        _replication.Dispose(); // publishers and appliers stop before the memory they read and write goes
        using (_model.Enter())
        {
            _model.Disposed = true;
            foreach (var c in _model.Containers.ToList())
            {
                foreach (var o in c.ObjectsById.Values)
                {
                    o.AsyncTarget?.Dispose(); // the appliers have stopped (BrokerServer.Stop)
                }

                foreach (var s in c.Segments)
                {
                    s.Dispose();
                }
            }

            _model.Clear();
        }
    }
}
