using System.Buffers;
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

    /// <summary>The highest watermark acknowledged (the holder of the flush gate only).</summary>
    public long Watermark { get; set; }

    /// <summary>The highest watermark published, acknowledged or not (the holder of the flush gate only).</summary>
    public long WatermarkIssued { get; set; }

    /// <summary>Per block, the BlockVersion the last pass that read the block saw (pass thread only): a block that is
    /// not dirty and still reads it has nothing unsent and no write in progress.</summary>
    public long[] Published { get; } = new long[state.BlockCount];

    /// <summary>Per block, whether a publish of it is in flight (the holder of the flush gate only): a dirty block
    /// waits for it, so each block has at most one message in flight and writes made meanwhile go out as one.</summary>
    public bool[] InFlight { get; } = new bool[state.BlockCount];

    public int BlockSize => 1 << View.BlockShift;

    public int BlockLength(long b) => (int)Math.Min(BlockSize, State.Size - (b * BlockSize));
}

/// <summary>
/// The owner's side of a replicated container (docs/ARCHITECTURE.md §14): the ownership lease, and the replication
/// passes that publish each changed block to the stream. A pass is durable write-back's (§11) with the stream as the
/// store: every <see cref="ReplicationInterval"/> and on every <see cref="Flush"/>, a scan, for each object, reads its
/// version v0, then for each dirty block that is not write-locked takes a read hold with the broker's slot, clears the
/// dirty bit, reads the block's version and copies the block, releases the hold and publishes the copy. An object the
/// scan found clean gets a watermark message with v0 once the pass is finalized: every write of version ≤ v0 had
/// released its locks (so set its dirty bit) before the scan read it, or still held a block, which the scan then
/// skipped (not clean, no watermark); so its blocks are in this pass's or an earlier pass's messages.
/// <para><b>Pipelined passes.</b> Publishes are not awaited by the scan that issued them (only for in-flight room,
/// <see cref="InFlightBytes"/>): each takes a ticket, in queue order, and whoever holds <see cref="FlushGate"/> reaps
/// completed ones in ticket order (the pass thread as soon as one completes). A pass is finalized when every ticket
/// issued up to the end of its scan is reaped; then, and only if no block publish failed since its scan began, its
/// watermarks are published, behind every block message they speak for. Why that condition suffices: a block the
/// scan counted as sent (not dirty, or taken) was taken by this pass or an earlier one, whose tickets are all reaped
/// by then. If one of them failed and was reaped before this scan began, its block was marked dirty again before the
/// scan (a scan begins by marking the blocks of failures reaped before it dirty again: the pass thread reaps and
/// then scans in one hold of the gate), so this scan sent it again or found the
/// object not clean. If it was reaped after the scan began, the failure counter moved and the watermarks are
/// dropped; a later pass finds the block dirty and sends it and its own watermark. A failed publish marks its block
/// dirty again. Lock order: <see cref="FlushGate"/> (level DurableFlush) outermost; the object list's lock
/// (DurableCatalog) and an object's gate (DurableObject) inside; the pass never takes the model lock.</para>
/// </summary>
internal sealed class ReplicatedOwner : IDisposable
{
    private const long InFlightBytes = 16 << 20; // the baseline's window (16 x 1 MiB); 4, 16 and 64 in flight gave JetStream the same rate here
    private static readonly TimeSpan NatsTimeout = TimeSpan.FromSeconds(10);

    private readonly ReplicationService _service;
    private readonly NatsLink _link;
    private readonly INatsKVStore _kv;
    private readonly ILogger _logger;
    private readonly Lock _objectsGate = new();
    private readonly List<OwnedObject> _objects = [];

    /// <summary>Object names whose tombstone and purge are under way (count per name): a new incarnation of such a
    /// name is not announced before they end (docs/ARCHITECTURE.md §14.2).</summary>
    private readonly PendingTombstones _tombstones = new();
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread _thread;
    private readonly Thread _heartbeat;
    private readonly TimeSpan _interval;
    private readonly TimeSpan _leaseTime;
    private ulong _leaseRevision;
    private long _lastHeartbeat;
    private string? _fenced;
    private bool _started;

    // The pipeline: whoever holds FlushGate (the pass thread, a Flush, Dispose) runs it.
    private readonly Queue<Pending> _inflight = new();
    private readonly Queue<ScannedPass> _scanned = new();
    private readonly List<Pending> _failed = [];
    private readonly ManualResetEventSlim _completed = new(); // set by every publish's completion (and to stop)
    private long _inflightBytes;
    private long _issued;   // tickets issued, one per publish, in queue order
    private long _reaped;   // every ticket up to this one is reaped
    private long _failures; // failed block publishes reaped
    private string? _lastFailure;
    private long _lastLogged = long.MinValue / 2;

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
            _tombstones.Add(o.Name); // before the name can be created again
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
            _tombstones.Done(name);
        }
    }

    /// <summary>Returns once every write to the container that completed before the call is acknowledged by the
    /// stream: a pass started after the call that skipped no dirty block, and every publish issued before its end,
    /// acknowledged with no publish failing meanwhile (see "Pipelined passes" in the class comment).</summary>
    /// <exception cref="BrokerError">IoError (a publish failed; the blocks stay dirty), PermissionDenied (the lease was
    /// lost), Timeout, Canceled.</exception>
    public void Flush(TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan || timeout.TotalMilliseconds > int.MaxValue
            ? long.MaxValue
            : Environment.TickCount64 + (long)timeout.TotalMilliseconds;

        // The call's timeout bounds the wait for the gate too: the background thread holds it only for a scan and
        // the reaping of what has completed, but a scan may wait for in-flight room (publishes time out after the
        // connection's request timeout when the stream has no quorum).
        var gateWait = deadline == long.MaxValue ? Timeout.InfiniteTimeSpan : timeout;
        if (!LockOrder.TryEnter(FlushGate, LockLevel.DurableFlush, gateWait, out var gate))
        {
            throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': a replication pass in progress did not end within the timeout (the stream may be unavailable)");
        }

        using (gate)
        {
            while (true)
            {
                long failuresBefore = _failures;
                ScannedPass pass;
                try
                {
                    pass = Scan(deadline, token);
                    if (!ReapAll(deadline, token))
                    {
                        throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': not every block was acknowledged by the stream within the timeout (they are sent again if a publish fails)");
                    }
                }
                finally
                {
                    RemarkFailed();
                }

                if (Fenced is { } why)
                {
                    throw new BrokerError(ErrorCode.PermissionDenied, $"replication of '{Container}': {why}");
                }

                if (pass.Error is { } error)
                {
                    throw new BrokerError(ErrorCode.IoError, $"replication of '{Container}': {error}");
                }

                if (_failures != failuresBefore)
                {
                    throw new BrokerError(ErrorCode.IoError, $"replication of '{Container}': {_lastFailure} (the blocks stay dirty and are sent again)");
                }

                if (pass.Clean)
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

    /// <summary>The pass thread: a scan every <see cref="ReplicationService"/> interval, and the reaping of completed
    /// publishes as soon as one completes (a pass's watermarks go out as soon as its last publish is in). A Flush in
    /// progress does both itself.</summary>
    private void Loop()
    {
        long nextScan = 0;
        while (true)
        {
            _completed.Wait((int)Math.Clamp(nextScan - Environment.TickCount64, 0, int.MaxValue));
            if (_stop.IsSet)
            {
                return;
            }

            if (!LockOrder.TryEnter(FlushGate, LockLevel.DurableFlush, out var held))
            {
                _stop.Wait(_interval); // a Flush runs the pipeline meanwhile
                continue;
            }

            using (held)
            {
                _completed.Reset(); // before reaping: a completion after this sets it again
                try
                {
                    ReapReady();
                    if (Environment.TickCount64 >= nextScan)
                    {
                        Scan(long.MaxValue, CancellationToken.None);
                        nextScan = Environment.TickCount64 + (long)_interval.TotalMilliseconds;
                        ReapReady();
                    }
                }
                finally
                {
                    RemarkFailed();
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

    /// <summary>One scan (see the class comment): publishes every dirty block it can read-hold, waiting for in-flight
    /// room (the oldest publish) when <see cref="InFlightBytes"/> are out, and queues the pass for its watermarks.
    /// The caller holds <see cref="FlushGate"/> and calls <see cref="RemarkFailed"/> after it, holding no object
    /// gate.</summary>
    /// <exception cref="BrokerError">Timeout when room does not come before <paramref name="deadline"/>, Canceled.</exception>
    private unsafe ScannedPass Scan(long deadline, CancellationToken token)
    {
        RemarkFailed(); // failures reaped before the scan begins must be dirty again before it reads the blocks
        var pass = new ScannedPass(_failures);
        if (Fenced is { } why)
        {
            pass.Error = why;
            pass.Clean = false;
            pass.LastTicket = _issued;
            _scanned.Enqueue(pass);
            return pass;
        }

        List<OwnedObject> objects;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            objects = [.. _objects];
        }

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
                    string? failed = Announce(o, token);
                    if (!o.Announced)
                    {
                        pass.Error ??= failed;
                        pass.Clean = false;
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

                    if (o.InFlight[b])
                    {
                        objectClean = false; // its last message is not acknowledged yet: a later pass sends it
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
                        o.Published[b] = version; // what this owner accounts for (a failed publish re-marks it dirty)
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

                    Publish(o, b, copy, length, version, torn);
                    while (_inflightBytes > InFlightBytes)
                    {
                        if (!ReapHead(deadline, token))
                        {
                            throw new BrokerError(ErrorCode.Timeout, $"flush of '{Container}': the stream did not acknowledge in-flight blocks within the timeout");
                        }
                    }
                }
            }

            pass.Clean &= objectClean;
            if (objectClean && v0 > o.WatermarkIssued)
            {
                pass.Watermarks.Add((o, v0));
            }
        }

        pass.LastTicket = _issued;
        _scanned.Enqueue(pass);
        FinalizeReady(); // a pass that issued nothing after the last reaped ticket is complete already
        return pass;
    }

    /// <summary>Waits for and reaps every publish in flight, the watermarks their passes issue meanwhile included.
    /// Returns false when <paramref name="deadline"/> came first (the rest stay queued).</summary>
    private bool ReapAll(long deadline, CancellationToken token)
    {
        while (_inflight.Count > 0)
        {
            if (!ReapHead(deadline, token))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Reaps the publishes at the head of the queue that have completed, without waiting.</summary>
    private void ReapReady()
    {
        while (_inflight.TryPeek(out var p) && p.Ack.IsCompleted)
        {
            ReapHead(long.MaxValue, CancellationToken.None);
        }
    }

    /// <summary>Waits for the oldest publish (until <paramref name="deadline"/>) and reaps it: counted, or a failure
    /// (a block goes to <see cref="_failed"/>, marked dirty again by <see cref="RemarkFailed"/>); then finalizes the
    /// scanned passes it completes. Returns false when the deadline passed first (the publish stays queued).</summary>
    private bool ReapHead(long deadline, CancellationToken token)
    {
        var p = _inflight.Peek();
        if (!p.Ack.IsCompleted)
        {
            int ms = deadline == long.MaxValue ? Timeout.Infinite : (int)Math.Clamp(deadline - Environment.TickCount64, 0, int.MaxValue);
            try
            {
                if (!p.Ack.Wait(ms, token))
                {
                    return false;
                }
            }
            catch (AggregateException)
            {
                // completed with an error: read below
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                throw new BrokerError(ErrorCode.Canceled, "flush canceled (blocks in flight are still acknowledged or sent again)");
            }
        }

        _inflight.Dequeue();
        _reaped = p.Ticket;
        string? failure = null;
        try
        {
            p.Ack.GetAwaiter().GetResult().EnsureSuccess();
        }
        catch (Exception e)
        {
            // Any exception is this publish's failure: the bookkeeping below (in-flight bytes and flag, the pooled
            // copy, the re-mark) must run for every dequeued publish, or the block is never sent again.
            failure = e.Message;
        }

        if (p.Block >= 0)
        {
            _inflightBytes -= p.Length;
            p.Object.InFlight[p.Block] = false;
            ArrayPool<byte>.Shared.Return(p.Copy!);
            if (failure is null)
            {
                _service.CountPublished(p.Length);
            }
            else
            {
                _failures++;
                _lastFailure = $"block {p.Block} of '{p.Object.State.Name}': {failure}";
                _failed.Add(p);
            }
        }
        else if (failure is null)
        {
            p.Object.Watermark = Math.Max(p.Object.Watermark, p.Watermark);
        }
        else
        {
            // Lost: a later clean scan sends it again. Not a failure of the blocks (their acks are in).
            p.Object.WatermarkIssued = p.Object.Watermark;
            LogFailure($"watermark of '{p.Object.State.Name}': {failure}");
        }

        FinalizeReady();
        return true;
    }

    /// <summary>Every scanned pass whose publishes are all reaped: its watermarks go out if no publish failed since
    /// the pass began (a failure found after that may concern a block the pass counted as sent; see the class
    /// comment), else they are dropped (a later scan finds the block dirty again and its own watermark).</summary>
    private void FinalizeReady()
    {
        while (_scanned.TryPeek(out var s) && s.LastTicket <= _reaped)
        {
            _scanned.Dequeue();
            if (Fenced is not null)
            {
                continue; // a fenced owner publishes nothing more (its watermarks would land after a takeover read the stream)
            }

            if (s.Error is not null || _failures != s.FailuresAtStart)
            {
                LogFailure(s.Error ?? _lastFailure ?? "a publish failed");
                continue;
            }

            foreach (var (o, v) in s.Watermarks)
            {
                if (!o.Closed && v > o.WatermarkIssued)
                {
                    o.WatermarkIssued = v;
                    PublishWatermark(o, v);
                }
            }
        }
    }

    /// <summary>Marks the blocks of failed publishes dirty again, for a later pass. Called holding no object gate.</summary>
    private void RemarkFailed()
    {
        foreach (var p in _failed)
        {
            using (LockOrder.Enter(p.Object.Gate, LockLevel.DurableObject))
            {
                if (!p.Object.Closed)
                {
                    p.Object.View.Block(p.Block).MarkDirty();
                }
            }
        }

        _failed.Clear();
    }

    /// <summary>At most one log line a second: a stream without quorum fails every publish of every pass.</summary>
    private void LogFailure(string what)
    {
        long now = Environment.TickCount64;
        if (Fenced is null && now - _lastLogged >= 1000)
        {
            _lastLogged = now;
            Log.ReplicationFailed(_logger, Container, what);
        }
    }

    private string? Announce(OwnedObject o, CancellationToken token)
    {
        if (_tombstones.Contains(o.State.Name))
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

    private unsafe void Publish(OwnedObject o, long b, byte[] copy, int length, long version, bool torn)
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

        _inflightBytes += length;
        o.InFlight[b] = true;
        Issue(o, b, copy, length, 0, ReplicationNames.BlockSubject(Spec.Stream, Container, o.State.Name, b), new ReadOnlyMemory<byte>(copy, 0, length), h);
    }

    /// <summary>A watermark (see the class comment), queued behind every publish issued before it.</summary>
    private void PublishWatermark(OwnedObject o, long v) =>
        Issue(o, -1, null, 0, v, ReplicationNames.WatermarkSubject(Spec.Stream, Container, o.State.Name), ReadOnlyMemory<byte>.Empty, Headers(o, v));

    /// <summary>Starts one publish and queues it with the next ticket. Never bounded by a caller's token: a publish
    /// ends by its acknowledgement or the connection's request timeout, and is reaped by whoever holds the gate next.</summary>
    private void Issue(OwnedObject o, long block, byte[]? copy, int length, long watermark, string subject, ReadOnlyMemory<byte> data, NatsHeaders headers)
    {
        Task<PubAckResponse> ack;
        try
        {
            ack = _link.JetStream.PublishAsync(subject, data, headers: headers).AsTask();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            ack = Task.FromException<PubAckResponse>(e);
        }

        _ = ack.ContinueWith(static (_, state) => ((ManualResetEventSlim)state!).Set(), _completed, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        _inflight.Enqueue(new Pending(o, block, copy, length, watermark, ack, ++_issued));
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
        _completed.Set();
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
                _heartbeat.Join(_leaseTime); // a refresh in flight would move the revision the lease delete checks
            }

            // And after the publishes still in flight (the pipeline does not wait for them; see the class comment).
            using (LockOrder.Enter(FlushGate, LockLevel.DurableFlush))
            {
                ReapAll(Environment.TickCount64 + (long)NatsTimeout.TotalMilliseconds, CancellationToken.None);
                RemarkFailed();
            }

            _tombstones.WaitNone(NatsTimeout * 3);
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

    /// <summary>Broker shutdown: stops the threads and waits for them, then one last scan and the wait for every
    /// publish (what clients do not hold write-locked goes to the stream, as durable write-back does at shutdown),
    /// bounded by the NATS timeout. The lease is left to expire: the stream is what a failover goes on from.</summary>
    public void Dispose()
    {
        _stop.Set();
        _completed.Set();
        if (!_started)
        {
            return;
        }

        _thread.Join(TimeSpan.FromSeconds(15));
        _heartbeat.Join(TimeSpan.FromSeconds(15));
        using (LockOrder.Enter(FlushGate, LockLevel.DurableFlush))
        {
            long deadline = Environment.TickCount64 + (long)NatsTimeout.TotalMilliseconds;
            try
            {
                Scan(deadline, CancellationToken.None);
                ReapAll(deadline, CancellationToken.None);
            }
            catch (BrokerError e)
            {
                LogFailure($"last pass at shutdown: {e.Message}");
            }
            finally
            {
                RemarkFailed();
            }

            if (_inflight.Count > 0)
            {
                LogFailure($"last pass at shutdown: {_inflight.Count} publishes not acknowledged within {NatsTimeout.TotalSeconds:0} s");
            }
        }
    }

    /// <summary>One publish in flight: a block's (<see cref="Block"/> ≥ 0, its pooled <see cref="Copy"/>) or a
    /// watermark's (<see cref="Block"/> -1, <see cref="Watermark"/>); tickets are issued in queue order.</summary>
    private readonly record struct Pending(OwnedObject Object, long Block, byte[]? Copy, int Length, long Watermark, Task<PubAckResponse> Ack, long Ticket);

    /// <summary>A scan whose publishes may still be in flight: finalized once every ticket up to
    /// <see cref="LastTicket"/> is reaped.</summary>
    private sealed class ScannedPass(long failuresAtStart)
    {
        /// <summary>Failed block publishes reaped before the scan began.</summary>
        public long FailuresAtStart { get; } = failuresAtStart;

        /// <summary>The last ticket issued when the scan ended.</summary>
        public long LastTicket { get; set; }

        /// <summary>No dirty block was skipped and every object was announced.</summary>
        public bool Clean { get; set; } = true;

        public string? Error { get; set; }

        /// <summary>The objects the scan found clean, with the version read at their start.</summary>
        public List<(OwnedObject O, long V)> Watermarks { get; } = [];
    }

    /// <summary>The names whose object tombstone and purge are still running (<see cref="PurgeObjectAsync"/>), with a
    /// count: one name may be destroyed again while its earlier purge runs. Its own lock; waits use its monitor.</summary>
    private sealed class PendingTombstones
    {
        private readonly Dictionary<string, int> _names = new(StringComparer.Ordinal);

        public void Add(string name)
        {
            lock (_names)
            {
                _names[name] = _names.GetValueOrDefault(name) + 1;
            }
        }

        public void Done(string name)
        {
            lock (_names)
            {
                if (_names.TryGetValue(name, out int n) && n > 1)
                {
                    _names[name] = n - 1;
                }
                else
                {
                    _names.Remove(name);
                    Monitor.PulseAll(_names);
                }
            }
        }

        public bool Contains(string name)
        {
            lock (_names)
            {
                return _names.ContainsKey(name);
            }
        }

        /// <summary>Waits until no purge runs, at most <paramref name="timeout"/>.</summary>
        public void WaitNone(TimeSpan timeout)
        {
            long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
            lock (_names)
            {
                while (_names.Count > 0)
                {
                    long left = deadline - Environment.TickCount64;
                    if (left <= 0 || !Monitor.Wait(_names, (int)left))
                    {
                        return;
                    }
                }
            }
        }
    }
}
