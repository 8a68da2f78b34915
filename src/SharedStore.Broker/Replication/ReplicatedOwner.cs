using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using NATS.Client.KeyValueStore;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>One object of a container this broker owns: its broker view (the broker's slot, through the object's
/// ledger) and what has been published of it. A pass and the object's removal serialize on <see cref="Gate"/>
/// (<see cref="LockLevel.DurableObject"/>), as for durable objects.</summary>
internal sealed class OwnedObject(ObjectState state, ObjectView view, ulong incarnation)
{
    public ObjectState State { get; } = state;

    public ObjectView View { get; } = view;

    public ulong Incarnation { get; } = incarnation;

    public object Gate { get; } = new();

    public bool Closed { get; set; }

    /// <summary>The catalog key and the announcement are in NATS (the pass does it before the first block).</summary>
    public bool Announced { get; set; }

    /// <summary>The highest watermark published (pass thread only).</summary>
    public long Watermark { get; set; }

    /// <summary>Per block, the BlockVersion the last pass that read the block saw (pass thread only): a block that is
    /// not dirty and still reads it has nothing unsent and no write in progress.</summary>
    public long[] Published { get; } = new long[state.BlockCount];

    public int BlockSize => 1 << View.BlockShift;

    public int BlockLength(long b) => (int)Math.Min(BlockSize, State.Size - (b * BlockSize));
}

/// <summary>
/// The owner's side of a replicated container (docs/ARCHITECTURE.md §14): the ownership lease, and the replication
/// pass that publishes each changed block to the stream. The pass is durable write-back's (§11) with the stream as
/// the store: every <see cref="ReplicationInterval"/> and on every <see cref="Flush"/>, for each object, read its
/// version v0, then for each dirty block that is not write-locked take a read hold with the broker's slot, clear the
/// dirty bit, read the block's version and copy the block, release the hold and publish the copy (many publishes in
/// flight). Once every publish of the pass is acknowledged, an object the pass found clean gets a watermark message
/// with v0: every write of version ≤ v0 had released its locks (so set its dirty bit) before the pass read it, or
/// still held a block, which the pass then skipped (not clean, no watermark); so its blocks are in this pass's or an
/// earlier pass's acknowledged messages, all of which precede the watermark in the stream. A failed publish marks its
/// block dirty again. Lock order: <see cref="FlushGate"/> (level DurableFlush) outermost; the object list's lock
/// (DurableCatalog) and an object's gate (DurableObject) inside; the pass never takes the model lock.
/// </summary>
internal sealed class ReplicatedOwner : IDisposable
{
    private const long InFlightBytes = 64 << 20;
    private static readonly TimeSpan NatsTimeout = TimeSpan.FromSeconds(10);

    private readonly ReplicationService _service;
    private readonly NatsLink _link;
    private readonly INatsKVStore _kv;
    private readonly ILogger _logger;
    private readonly Lock _objectsGate = new();
    private readonly List<OwnedObject> _objects = [];

    /// <summary>Object names whose tombstone and purge are under way (count per name): a new incarnation of such a
    /// name is not announced before they end (docs/ARCHITECTURE.md §14.2).</summary>
    private readonly ConcurrentDictionary<string, int> _tombstones = new(StringComparer.Ordinal);
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread _thread;
    private readonly Thread _heartbeat;
    private readonly TimeSpan _interval;
    private readonly TimeSpan _leaseTime;
    private ulong _leaseRevision;
    private long _lastHeartbeat;
    private string? _fenced;
    private bool _started;

    public ReplicatedOwner(ReplicationService service, NatsLink link, INatsKVStore kv, Replication spec, string container, ulong epoch, ulong leaseRevision, ILogger logger)
    {
        _service = service;
        _link = link;
        _kv = kv;
        Spec = spec;
        Container = container;
        Epoch = epoch;
        _leaseRevision = leaseRevision;
        _lastHeartbeat = Environment.TickCount64;
        _logger = logger;
        _interval = service.Options.ReplicationInterval;
        _leaseTime = service.Options.ReplicationLease;
        _thread = new Thread(Loop) { IsBackground = true, Name = "sharedstore-replicate" };
        _heartbeat = new Thread(HeartbeatLoop) { IsBackground = true, Name = "sharedstore-lease" };
    }

    /// <summary>The resolved replication settings (URL, stream, bucket, replicas), as ContainerInfo reports them.</summary>
    public Replication Spec { get; }

    public string Container { get; }

    /// <summary>The lease key's revision when this owner created it: carried by every message (SS-Epoch).</summary>
    public ulong Epoch { get; }

    /// <summary>One pass or flush at a time.</summary>
    public object FlushGate { get; } = new();

    /// <summary>Why this owner stopped publishing (lost its lease), or null.</summary>
    public string? Fenced => Volatile.Read(ref _fenced);

    public void Start()
    {
        _started = true;
        _thread.Start();
        _heartbeat.Start();
    }

    /// <summary>Under the model lock: lists a new object (announced and published by the next pass).</summary>
    public void AddObject(ObjectState o, int blockSize) => AddObject(o, blockSize, (Epoch << 32) | o.Id, null);

    /// <summary>Under the model lock: lists an object. A takeover passes the incarnation the object had under the old
    /// owner (the replicas hold it under that one and would drop messages of another) and the owner's version of each
    /// block as read from the stream; the object's version word is raised to the highest of them, so that every new
    /// write's version is above every version any replica has applied.</summary>
    public unsafe void AddObject(ObjectState o, int blockSize, ulong incarnation, long[]? inherited)
    {
        var view = o.Segment.BrokerView(o, blockSize, durable: true, repair: null);
        var owned = new OwnedObject(o, view, incarnation);
        if (inherited is not null)
        {
            inherited.AsSpan().CopyTo(owned.Published);
            long highest = inherited.Length == 0 ? 0 : inherited.Max();
            ObjectVersion.AdvanceTo(view.Locks, highest);
            owned.Watermark = 0; // the first clean pass publishes one with the new epoch
        }

        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            _objects.Add(owned);
        }
    }

    /// <summary>Under the model lock, before the object's memory is freed: waits for a pass that holds it, takes it out
    /// and, in the background, publishes its tombstone, then purges its subjects and catalog key (not when the
    /// container is being freed: <see cref="Close"/>'s container tombstone and purge cover it).</summary>
    public void RemoveObject(ObjectState o, bool purge)
    {
        OwnedObject? owned;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            owned = _objects.Find(x => x.State == o);
            if (owned is not null)
            {
                _objects.Remove(owned);
            }
        }

        if (owned is null)
        {
            return;
        }

        using (LockOrder.Enter(owned.Gate, LockLevel.DurableObject))
        {
            owned.Closed = true;
        }

        owned.View.Dispose();
        if (purge && Fenced is null && !_stop.IsSet)
        {
            _tombstones.AddOrUpdate(o.Name, 1, static (_, n) => n + 1); // before the name can be created again
            _ = Task.Run(() => PurgeObjectAsync(owned));
        }
    }

    /// <summary>The owner destroyed an object (docs/ARCHITECTURE.md §14.2): its tombstone replaces its announcement
    /// (same subject: the stream keeps that one message per name), then its blocks and watermark are purged and its
    /// catalog key deleted. Until this ends, a new incarnation of the name is not announced (<see cref="Announce"/>),
    /// so every message of a new incarnation follows the tombstone in the stream, and the purge never removes one.
    /// A tombstone that could not be published (NATS down for the request timeout) is logged: replicas keep the
    /// object until a new incarnation of the name replaces it or the container goes.</summary>
    private async Task PurgeObjectAsync(OwnedObject o)
    {
        string name = o.State.Name;
        try
        {
            using var cts = new CancellationTokenSource(NatsTimeout);
            bool told = false;
            try
            {
                var h = Headers(o, 0);
                h[ReplicationHeaders.Destroyed] = "1";
                (await _link.JetStream.PublishAsync(ReplicationNames.ObjectSubject(Spec.Stream, Container, name), ReadOnlyMemory<byte>.Empty, headers: h, cancellationToken: cts.Token)
                    .ConfigureAwait(false)).EnsureSuccess();
                told = true;
            }
            catch (Exception e) when (e is NatsException or OperationCanceledException)
            {
                Log.ReplicationFailed(_logger, Container, $"tombstone of object '{name}' not published (replicas keep it): {e.Message}");
            }

            var stream = await _link.JetStream.GetStreamAsync(Spec.Stream, cancellationToken: cts.Token).ConfigureAwait(false);
            await stream.PurgeAsync(new StreamPurgeRequest { Filter = ReplicationNames.ObjectBlocks(Spec.Stream, Container, name) }, cts.Token).ConfigureAwait(false);
            await stream.PurgeAsync(new StreamPurgeRequest { Filter = ReplicationNames.WatermarkSubject(Spec.Stream, Container, name) }, cts.Token).ConfigureAwait(false);
            if (!told)
            {
                // No tombstone: at least a replica that joins later must not create the object from its announcement.
                await stream.PurgeAsync(new StreamPurgeRequest { Filter = ReplicationNames.ObjectSubject(Spec.Stream, Container, name) }, cts.Token).ConfigureAwait(false);
            }

            await _kv.DeleteAsync(ReplicationNames.ObjectKey(Container, name), cancellationToken: cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            Log.ReplicationFailed(_logger, Container, $"purge of object '{name}': {e.Message}");
        }
        finally
        {
            while (_tombstones.TryGetValue(name, out int n) && !(n == 1 ? _tombstones.TryRemove(new(name, 1)) : _tombstones.TryUpdate(name, n - 1, n)))
            {
                // raced with another destroy of the same name: read again
            }
        }
    }

    /// <summary>Returns once every write to the container that completed before the call is acknowledged by the
    /// stream (every pass until one skips no dirty block).</summary>
    /// <exception cref="BrokerError">IoError (a publish failed; the blocks stay dirty), PermissionDenied (the lease was
    /// lost), Timeout, Canceled.</exception>
    public void Flush(TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        // The call's timeout and token bound the whole flush; each publish is bounded by the connection's request
        // timeout (10 s), so a large pass is not cut at 10 s while it makes progress.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
        if (deadline != long.MaxValue)
        {
            cts.CancelAfter(timeout);
        }

        // The call's timeout bounds the wait for the gate too: a background pass holds it while its publishes are
        // outstanding (up to the connection's request timeout each, when the stream has no quorum).
        var gateWait = deadline == long.MaxValue || timeout.TotalMilliseconds > int.MaxValue ? Timeout.InfiniteTimeSpan : timeout;
        if (!LockOrder.TryEnter(FlushGate, LockLevel.DurableFlush, gateWait, out var gate))
        {
            throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': a replication pass in progress did not end within the timeout (the stream may be unavailable)");
        }

        using (gate)
        {
            while (true)
            {
                var (clean, error) = Pass(cts.Token);
                if (Fenced is { } why)
                {
                    throw new BrokerError(ErrorCode.PermissionDenied, $"replication of '{Container}': {why}");
                }

                if (token.IsCancellationRequested)
                {
                    throw new BrokerError(ErrorCode.Canceled, "flush canceled (the blocks not acknowledged stay dirty and are sent again)");
                }

                if (error is not null && cts.IsCancellationRequested)
                {
                    throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': not every block was acknowledged by the stream within the timeout (they stay dirty and are sent again)");
                }

                if (error is not null)
                {
                    throw new BrokerError(ErrorCode.IoError, $"replication of '{Container}': {error} (the blocks stay dirty and are sent again)");
                }

                if (clean)
                {
                    return;
                }

                if (token.IsCancellationRequested)
                {
                    throw new BrokerError(ErrorCode.Canceled, "flush canceled");
                }

                if (Environment.TickCount64 >= deadline)
                {
                    throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': blocks stayed write-locked by clients");
                }

                Thread.Sleep(1);
            }
        }
    }

    private void Loop()
    {
        while (!_stop.Wait(_interval))
        {
            if (LockOrder.TryEnter(FlushGate, LockLevel.DurableFlush, out var held))
            {
                using (held)
                {
                    var (_, error) = Pass(CancellationToken.None);
                    if (error is not null && Fenced is null)
                    {
                        Log.ReplicationFailed(_logger, Container, error);
                    }
                }
            }
        }
    }

    /// <summary>The lease's own thread: a heartbeat is never late because a pass (a large one: a gigabyte at the
    /// stream's speed takes many seconds) or a flush holds the pass thread.</summary>
    private void HeartbeatLoop()
    {
        var period = TimeSpan.FromMilliseconds(Math.Max(10, _leaseTime.TotalMilliseconds / 10));
        while (!_stop.Wait(period) && Fenced is null)
        {
            Heartbeat();
        }
    }

    /// <summary>Refreshes the lease every third of its time with an update checked against the revision this owner
    /// wrote last: a refusal means another broker took the lease (failover), and this owner stops publishing at once.
    /// An owner that cannot refresh it for a whole lease time stops too, before another may take it over.</summary>
    private void Heartbeat()
    {
        long now = Environment.TickCount64;
        if (Fenced is not null || now - Volatile.Read(ref _lastHeartbeat) < _leaseTime.TotalMilliseconds / 3)
        {
            return;
        }

        try
        {
            using var cts = new CancellationTokenSource(_leaseTime / 3);
            var lease = _service.Lease(Epoch);
            ulong revision = _kv.UpdateAsync(ReplicationNames.LeaseKey(Container), lease.ToByteArray(), Volatile.Read(ref _leaseRevision), cancellationToken: cts.Token)
                .AsTask().GetAwaiter().GetResult();
            Volatile.Write(ref _leaseRevision, revision);
            Volatile.Write(ref _lastHeartbeat, now);
        }
        catch (NatsKVWrongLastRevisionException)
        {
            CheckLeaseAfterRefusal(now);
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            if (now - Volatile.Read(ref _lastHeartbeat) >= _leaseTime.TotalMilliseconds)
            {
                Fence($"the ownership lease could not be refreshed for {_leaseTime.TotalSeconds:0.#} s ({e.Message})");
            }
        }
    }

    /// <summary>An update refused for its revision: either another broker wrote the lease (fence), or an earlier
    /// heartbeat of ours was applied by the server while its reply was lost or late (a timeout here), so the key's
    /// revision moved under our own value. Seen under load with a 1 GiB pass: the owner fenced itself. The key is
    /// read: our owner identity and epoch mean the revision is ours to adopt; anything else is a takeover.</summary>
    private void CheckLeaseAfterRefusal(long now)
    {
        try
        {
            using var cts = new CancellationTokenSource(_leaseTime / 3);
            var entry = _kv.GetEntryAsync<byte[]>(ReplicationNames.LeaseKey(Container), cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
            var lease = ReplicaLease.Parser.ParseFrom(entry.Value ?? []);
            if (lease.Owner == _service.Identity && lease.Epoch == Epoch)
            {
                Volatile.Write(ref _leaseRevision, entry.Revision); // the next heartbeat updates against it
                return;
            }

            Fence($"the ownership lease was taken over by '{lease.Owner}' (epoch {lease.Epoch})");
        }
        catch (Exception e) when (e is NatsKVKeyNotFoundException or NatsKVKeyDeletedException)
        {
            Fence("the ownership lease was deleted");
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException or Google.Protobuf.InvalidProtocolBufferException)
        {
            if (now - Volatile.Read(ref _lastHeartbeat) >= _leaseTime.TotalMilliseconds)
            {
                Fence($"the ownership lease could not be checked for {_leaseTime.TotalSeconds:0.#} s ({e.Message})");
            }
        }
    }

    private void Fence(string why)
    {
        if (Interlocked.CompareExchange(ref _fenced, why, null) is null)
        {
            Log.ReplicationFenced(_logger, Container, why);
        }
    }

    /// <summary>One pass (see the class comment). Returns whether no dirty block was skipped, and the first error.</summary>
    private unsafe (bool Clean, string? Error) Pass(CancellationToken token)
    {
        if (Fenced is { } why)
        {
            return (false, why);
        }

        List<OwnedObject> objects;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            objects = [.. _objects];
        }

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
        var inflight = new Queue<Pending>();
        long inflightBytes = 0;
        string? error = null;
        bool clean = true;
        var watermarks = new List<(OwnedObject O, long V)>();
        var failed = new List<Pending>();
        foreach (var o in objects)
        {
            bool objectClean = true;
            long v0;
            using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
            {
                if (o.Closed)
                {
                    continue;
                }

                if (!o.Announced)
                {
                    error ??= Announce(o, cts.Token);
                    if (!o.Announced)
                    {
                        clean = false;
                        continue;
                    }
                }

                v0 = ObjectVersion.Read(o.View.Locks);
                for (long b = 0; b < o.State.BlockCount; b++)
                {
                    BlockRange block = o.View.Block(b);
                    if (!block.AnyDirty())
                    {
                        // Not dirty: a write may still be between its version add and its release (it marks the block
                        // dirty only at release). Its version may be ≤ v0, so the object is clean only if the block
                        // is what this owner last accounted for, or no writer holds it (see "Why the watermark holds").
                        long bv = ObjectVersion.ReadBlock(o.View, b);
                        if (bv == o.Published[b] && bv != ObjectVersionDescriptor.Pending)
                        {
                            continue;
                        }

                        if (!block.TryAcquireReadFast())
                        {
                            objectClean = false;
                            continue;
                        }

                        bool dirtyNow = block.AnyDirty();
                        long settled = ObjectVersion.ReadBlock(o.View, b);
                        block.ReleaseRead();
                        if (dirtyNow)
                        {
                            objectClean = false; // a write completed meanwhile: the next pass sends it
                        }
                        else
                        {
                            o.Published[b] = settled; // no writer, nothing unsent: a dead writer's Pending, or unchanged
                        }

                        continue;
                    }

                    if (!block.TryAcquireReadFast())
                    {
                        objectClean = false; // a writer holds or waits for it: next pass (never wait for a client here)
                        continue;
                    }

                    int length = o.BlockLength(b);
                    byte[] copy;
                    long version;
                    bool torn;
                    try
                    {
                        if (!block.TakeDirty())
                        {
                            continue;
                        }

                        version = ObjectVersion.ReadBlock(o.View, b);
                        o.Published[b] = version; // what this pass accounts for (a failed publish re-marks it dirty)
                        torn = block.AnyTorn();
                        copy = ArrayPool<byte>.Shared.Rent(length);
                        new ReadOnlySpan<byte>(o.View.Data + (b * o.BlockSize), length).CopyTo(copy);
                    }
                    finally
                    {
                        block.ReleaseRead();
                    }

                    if (version == ObjectVersionDescriptor.Pending)
                    {
                        version = v0; // a writer died mid-write (torn): the object's version bounds it
                    }

                    inflight.Enqueue(Publish(o, b, copy, length, version, torn, cts.Token));
                    inflightBytes += length;
                    while (inflightBytes > InFlightBytes)
                    {
                        var p = inflight.Dequeue();
                        inflightBytes -= p.Length;
                        string? e = Complete(p, failed); // every one, after an error too: it re-marks its block dirty
                        error ??= e;
                    }
                }
            }

            clean &= objectClean;
            if (objectClean && v0 > o.Watermark)
            {
                watermarks.Add((o, v0));
            }
        }

        while (inflight.Count > 0)
        {
            string? e = Complete(inflight.Dequeue(), failed);
            error ??= e;
        }

        foreach (var p in failed)
        {
            using (LockOrder.Enter(p.Object.Gate, LockLevel.DurableObject))
            {
                if (!p.Object.Closed)
                {
                    p.Object.View.Block(p.Block).MarkDirty(); // sent again by a later pass
                }
            }
        }

        // Only after every block of the pass is acknowledged (they precede the watermarks in the stream).
        if (error is null)
        {
            foreach (var (o, v) in watermarks)
            {
                error ??= PublishWatermark(o, v, cts.Token);
            }
        }

        return (clean && error is null, error);
    }

    private string? Announce(OwnedObject o, CancellationToken token)
    {
        if (_tombstones.ContainsKey(o.State.Name))
        {
            return null; // an earlier incarnation's tombstone and purge first (PurgeObjectAsync); a later pass announces
        }

        try
        {
            var meta = new ReplicaObjectMeta { Name = o.State.Name, Size = (ulong)o.State.Size, Incarnation = o.Incarnation };
            _kv.PutAsync(ReplicationNames.ObjectKey(Container, o.State.Name), meta.ToByteArray(), cancellationToken: token).AsTask().GetAwaiter().GetResult();
            var h = Headers(o, 0);
            var ack = _link.JetStream.PublishAsync(ReplicationNames.ObjectSubject(Spec.Stream, Container, o.State.Name), ReadOnlyMemory<byte>.Empty, headers: h, cancellationToken: token)
                .AsTask().GetAwaiter().GetResult();
            ack.EnsureSuccess();
            o.Announced = true;
            return null;
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            return $"announcing object '{o.State.Name}': {e.Message}";
        }
    }

    private NatsHeaders Headers(OwnedObject o, long version) => new()
    {
        [ReplicationHeaders.Version] = version.ToString(CultureInfo.InvariantCulture),
        [ReplicationHeaders.Epoch] = Epoch.ToString(CultureInfo.InvariantCulture),
        [ReplicationHeaders.Incarnation] = o.Incarnation.ToString(CultureInfo.InvariantCulture),
        [ReplicationHeaders.Size] = o.State.Size.ToString(CultureInfo.InvariantCulture),
    };

    private unsafe Pending Publish(OwnedObject o, long b, byte[] copy, int length, long version, bool torn, CancellationToken token)
    {
        var h = Headers(o, version);
        uint crc;
        fixed (byte* data = copy)
        {
            crc = DurableFileDescriptor.Crc32C(data, length);
        }

        h[ReplicationHeaders.Crc] = crc.ToString("x8", CultureInfo.InvariantCulture);
        if (torn)
        {
            h[ReplicationHeaders.Torn] = "1";
        }

        Task<PubAckResponse> task;
        try
        {
            task = _link.JetStream.PublishAsync(ReplicationNames.BlockSubject(Spec.Stream, Container, o.State.Name, b), new ReadOnlyMemory<byte>(copy, 0, length), headers: h, cancellationToken: token).AsTask();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            task = Task.FromException<PubAckResponse>(e);
        }

        return new Pending(o, b, copy, length, task);
    }

    /// <summary>Waits for one publish; a failed one goes to <paramref name="failed"/> (marked dirty again by the caller,
    /// which holds no object gate then).</summary>
    private string? Complete(Pending p, List<Pending> failed)
    {
        string? error = null;
        try
        {
            p.Ack.GetAwaiter().GetResult().EnsureSuccess();
            _service.CountPublished(p.Length);
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            error = $"block {p.Block} of '{p.Object.State.Name}': {e.Message}";
            failed.Add(p);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(p.Copy);
        }

        return error;
    }

    private string? PublishWatermark(OwnedObject o, long v, CancellationToken token)
    {
        try
        {
            _link.JetStream.PublishAsync(ReplicationNames.WatermarkSubject(Spec.Stream, Container, o.State.Name), ReadOnlyMemory<byte>.Empty, headers: Headers(o, v), cancellationToken: token)
                .AsTask().GetAwaiter().GetResult().EnsureSuccess();
            o.Watermark = v;
            return null;
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            return $"watermark of '{o.State.Name}': {e.Message}";
        }
    }

    /// <summary>Under the model lock (the container is freed; called before its objects are removed, which then purge
    /// nothing of their own): stops the pass thread without waiting for it (it takes no model lock; each object's
    /// removal waits for a pass that holds it), then, in the background, publishes the container's tombstone once the
    /// pass thread and the object tombstones under way have ended, purges every earlier message of the container and
    /// deletes its catalog keys and lease. <paramref name="purge"/> false (broker shutdown): the stream keeps what it
    /// has for a failover, and the lease is left to expire.</summary>
    public void Close(bool purge)
    {
        _stop.Set();
        if (purge && Fenced is null)
        {
            _ = Task.Run(PurgeContainerAsync);
        }
    }

    private async Task PurgeContainerAsync()
    {
        try
        {
            // The tombstone is the container's last message: after the last pass (the thread ends after the pass it
            // is in) and after the tombstones of objects destroyed before (each bounded by its request timeout).
            if (_started)
            {
                _thread.Join(NatsTimeout * 3);
            }

            SpinWait.SpinUntil(() => _tombstones.IsEmpty, NatsTimeout * 3);
            using var cts = new CancellationTokenSource(NatsTimeout);
            ulong keepFrom = 0;
            try
            {
                var h = new NatsHeaders
                {
                    [ReplicationHeaders.Version] = "0",
                    [ReplicationHeaders.Epoch] = Epoch.ToString(CultureInfo.InvariantCulture),
                    [ReplicationHeaders.Incarnation] = "0",
                    [ReplicationHeaders.Size] = "0",
                };
                var ack = await _link.JetStream.PublishAsync(ReplicationNames.ContainerTombstoneSubject(Spec.Stream, Container), ReadOnlyMemory<byte>.Empty, headers: h, cancellationToken: cts.Token).ConfigureAwait(false);
                ack.EnsureSuccess();
                keepFrom = ack.Seq; // the purge keeps the tombstone (for replicas that have not read it yet)
            }
            catch (Exception e) when (e is NatsException or OperationCanceledException)
            {
                Log.ReplicationFailed(_logger, Container, $"tombstone of the container not published (replicas keep it): {e.Message}");
            }

            var stream = await _link.JetStream.GetStreamAsync(Spec.Stream, cancellationToken: cts.Token).ConfigureAwait(false);
            await stream.PurgeAsync(new StreamPurgeRequest { Filter = ReplicationNames.ContainerSubjects(Spec.Stream, Container), Seq = keepFrom }, cts.Token).ConfigureAwait(false);
            await foreach (string key in _kv.GetKeysAsync([$"o.{ReplicationNames.Hex(Container)}.>"], cancellationToken: cts.Token).ConfigureAwait(false))
            {
                await _kv.DeleteAsync(key, cancellationToken: cts.Token).ConfigureAwait(false);
            }

            await _kv.DeleteAsync(ReplicationNames.ContainerKey(Container), cancellationToken: cts.Token).ConfigureAwait(false);
            await _kv.DeleteAsync(ReplicationNames.LeaseKey(Container), new NatsKVDeleteOpts { Revision = Volatile.Read(ref _leaseRevision) }, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            Log.ReplicationFailed(_logger, Container, $"cleanup after destroy: {e.Message}");
        }
    }

    /// <summary>Broker shutdown: stops the thread and waits for it, then one last pass (what clients do not hold
    /// write-locked goes to the stream, as durable write-back does at shutdown). The lease is left to expire: the
    /// stream is what a failover goes on from.</summary>
    public void Dispose()
    {
        _stop.Set();
        if (!_started)
        {
            return;
        }

        _thread.Join(TimeSpan.FromSeconds(15));
        _heartbeat.Join(TimeSpan.FromSeconds(15));
        using (LockOrder.Enter(FlushGate, LockLevel.DurableFlush))
        {
            using var cts = new CancellationTokenSource(NatsTimeout);
            var (_, error) = Pass(cts.Token);
            if (error is not null && Fenced is null)
            {
                Log.ReplicationFailed(_logger, Container, $"last pass at shutdown: {error}");
            }
        }
    }

    private readonly record struct Pending(OwnedObject Object, long Block, byte[] Copy, int Length, Task<PubAckResponse> Ack);
}
