using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace SharedStore.Broker;

/// <summary>
/// The broker's instruments, on one meter named <see cref="MeterName"/> made by <see cref="IMeterFactory"/> (see
/// docs/OPERATIONS.md, "Metrics", for the list with units). Counters are also totalled here so that the
/// <c>status</c> request (<c>sharedstore stats</c>) can answer with the same figures a metrics listener sees.
/// Reserved names: <c>sharedstore.broker.writeback.lag</c> (not measured yet: write-back runs every 50 ms),
/// <c>sharedstore.broker.lock.waits</c> (lock waits happen in clients; the broker only sees them through
/// the Waiting bits).
/// </summary>
internal sealed class BrokerMetrics
{
    /// <summary>The meter's name: what <c>dotnet-counters</c> or an EventPipe session subscribes to.</summary>
    public const string MeterName = "SharedStore.Broker";

    public const string OperationsName = "sharedstore.broker.operations";
    public const string ObjectBytesName = "sharedstore.broker.object.bytes";
    public const string MemoryInUseName = "sharedstore.broker.memory.in_use";
    public const string ContainersName = "sharedstore.broker.containers";
    public const string ObjectsName = "sharedstore.broker.objects";
    public const string SessionsName = "sharedstore.broker.sessions";
    public const string RecoveredSessionsName = "sharedstore.broker.recovery.sessions";
    public const string RecoveredRecordsName = "sharedstore.broker.recovery.lock_records";
    public const string RingDepthName = "sharedstore.broker.ring.depth";
    public const string AsyncAppliedName = "sharedstore.broker.async.messages";
    public const string DurableWrittenName = "sharedstore.broker.durable.written";
    public const string DurableErrorsName = "sharedstore.broker.durable.write_errors";
    public const string DurableTornName = "sharedstore.broker.durable.torn_slots";
    public const string DurableCorruptName = "sharedstore.broker.durable.corrupt_blocks";
    public const string ReplicationPublishedName = "sharedstore.broker.replication.published";
    public const string ReplicationAppliedName = "sharedstore.broker.replication.applied";
    public const string ReplicationLagName = "sharedstore.broker.replication.lag";
    public const string ReplicationFailoversName = "sharedstore.broker.replication.failovers";

    private readonly Counter<long> _operations;
    private readonly Counter<long> _recoveredSessions;
    private readonly Counter<long> _recoveredRecords;
    private readonly ConcurrentDictionary<string, long> _operationTotals = new(StringComparer.Ordinal);
    private Func<BrokerSnapshot>? _snapshot;
    private long _recoveredSessionsTotal;
    private long _recoveredRecordsTotal;

    public BrokerMetrics(IMeterFactory meterFactory)
    {
        Meter = meterFactory.Create(new MeterOptions(MeterName));
        _operations = Meter.CreateCounter<long>(OperationsName, "{operation}", "Requests the broker handled, by kind (container_create, object_join, list…).");
        _recoveredSessions = Meter.CreateCounter<long>(RecoveredSessionsName, "{session}", "Client sessions that closed (exited or died) while still members of a container, whose memberships the broker released.");
        _recoveredRecords = Meter.CreateCounter<long>(RecoveredRecordsName, "{record}", "Block lock records in which recovery released reads, an owner or a waiting bit of a dead client.");
        Meter.CreateObservableUpDownCounter(ObjectBytesName, () => Snapshot().ObjectBytes, "By", "Bytes of objects that exist (sum of object sizes).");
        Meter.CreateObservableUpDownCounter(MemoryInUseName, () => Snapshot().BytesInUse, "By", "Shared memory handed out: page-rounded objects plus lock tables.");
        Meter.CreateObservableUpDownCounter(ContainersName, () => (long)Snapshot().Containers, "{container}", "Containers that exist.");
        Meter.CreateObservableUpDownCounter(ObjectsName, () => (long)Snapshot().Objects, "{object}", "Objects that exist.");
        Meter.CreateObservableUpDownCounter(SessionsName, () => (long)Snapshot().Sessions, "{session}", "Connected client sessions.");
        Meter.CreateObservableUpDownCounter(RingDepthName, () => _ringDepth?.Invoke() ?? 0, "{message}", "Asynchronous messages published in client rings and not yet processed by the appliers.");
        Meter.CreateObservableCounter(DurableWrittenName, () => _durable?.WrittenBytes ?? 0, "By", "Bytes of blocks written back to durable containers' files.");
        Meter.CreateObservableCounter(DurableErrorsName, () => _durable?.WriteErrors ?? 0, "{block}", "Block write-backs the disk refused (the blocks stay dirty in memory).");
        Meter.CreateObservableCounter(DurableTornName, () => _durable?.TornSlots ?? 0, "{slot}", "Shadow slots found torn or damaged at restore (skipped for the other slot).");
        Meter.CreateObservableCounter(DurableCorruptName, () => _durable?.CorruptBlocks ?? 0, "{block}", "Blocks with no valid copy on disk at restore (marked torn).");
        Meter.CreateObservableCounter(ReplicationPublishedName, () => _replication?.BytesPublished ?? 0, "By", "Bytes of blocks this broker published as the owner of replicated containers and JetStream acknowledged.");
        Meter.CreateObservableCounter(ReplicationAppliedName, () => _replication?.BytesApplied ?? 0, "By", "Bytes of blocks this broker applied as a replica.");
        Meter.CreateObservableGauge(ReplicationLagName, () => _replication?.MaxReplicaLagMs() ?? 0, "ms", "The highest replica lag of this broker's replica containers: from the last applied message's stream timestamp to its apply.");
        Meter.CreateObservableCounter(ReplicationFailoversName, () => _replication?.Failovers ?? 0, "{failover}", "Replicated containers whose ownership this broker took over after the owner's lease expired.");
        Meter.CreateObservableCounter(AsyncAppliedName, () => Interlocked.Read(ref _asyncTotal), "{message}", "Asynchronous messages the appliers processed (applied, failed or canceled).");
    }

    public Meter Meter { get; }

    /// <summary>Where the observable instruments read the broker's state; set once by the server.</summary>
    public void Observe(Func<BrokerSnapshot> snapshot) => _snapshot = snapshot;

    public void ObserveRingDepth(Func<long> depth) => _ringDepth = depth;

    public void ObserveDurable(DurableStore? durable) => _durable = durable;

    public void ObserveReplication(ReplicationService replication) => _replication = replication;

    private ReplicationService? _replication;

    private DurableStore? _durable;

    /// <summary>An applier processed <paramref name="messages"/> ring messages (once per batch).</summary>
    public void AsyncProcessed(long messages) => Interlocked.Add(ref _asyncTotal, messages);

    private Func<long>? _ringDepth;
    private long _asyncTotal;

    public void Operation(string kind)
    {
        _operationTotals.AddOrUpdate(kind, 1, static (_, v) => v + 1);
        if (_operations.Enabled)
        {
            AddOperation(kind);
        }
    }

    public void SessionRecovered(long releasedRecords)
    {
        Interlocked.Increment(ref _recoveredSessionsTotal);
        Interlocked.Add(ref _recoveredRecordsTotal, releasedRecords);
        _recoveredSessions.Add(1);
        if (releasedRecords > 0)
        {
            _recoveredRecords.Add(releasedRecords);
        }
    }

    /// <summary>The current value of every instrument, for the status request.</summary>
    public IEnumerable<(string Name, string Unit, string Tags, double Value)> Samples()
    {
        var s = Snapshot();
        foreach (var (kind, total) in _operationTotals.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            yield return (OperationsName, "{operation}", "kind=" + kind, total);
        }

        yield return (ObjectBytesName, "By", "", s.ObjectBytes);
        yield return (MemoryInUseName, "By", "", s.BytesInUse);
        yield return (ContainersName, "{container}", "", s.Containers);
        yield return (ObjectsName, "{object}", "", s.Objects);
        yield return (SessionsName, "{session}", "", s.Sessions);
        yield return (RecoveredSessionsName, "{session}", "", Interlocked.Read(ref _recoveredSessionsTotal));
        yield return (RecoveredRecordsName, "{record}", "", Interlocked.Read(ref _recoveredRecordsTotal));
        yield return (RingDepthName, "{message}", "", _ringDepth?.Invoke() ?? 0);
        yield return (AsyncAppliedName, "{message}", "", Interlocked.Read(ref _asyncTotal));
        yield return (DurableWrittenName, "By", "", _durable?.WrittenBytes ?? 0);
        yield return (DurableErrorsName, "{block}", "", _durable?.WriteErrors ?? 0);
        yield return (DurableTornName, "{slot}", "", _durable?.TornSlots ?? 0);
        yield return (DurableCorruptName, "{block}", "", _durable?.CorruptBlocks ?? 0);
        yield return (ReplicationPublishedName, "By", "", _replication?.BytesPublished ?? 0);
        yield return (ReplicationAppliedName, "By", "", _replication?.BytesApplied ?? 0);
        yield return (ReplicationLagName, "ms", "", _replication?.MaxReplicaLagMs() ?? 0);
        yield return (ReplicationFailoversName, "{failover}", "", _replication?.Failovers ?? 0);
    }

    private BrokerSnapshot Snapshot() => _snapshot?.Invoke() ?? default;

    // Tags are built only when someone listens (Kestrel's pattern): keeps the TagList off the common path.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddOperation(string kind) => _operations.Add(1, new KeyValuePair<string, object?>("kind", kind));
}

/// <summary>Point-in-time figures of the broker state, for observable instruments and status.</summary>
internal readonly record struct BrokerSnapshot(int Containers, int Objects, long ObjectBytes, long BytesInUse, int Sessions);
