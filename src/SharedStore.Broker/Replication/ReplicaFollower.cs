using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>One object of a replica container: the broker's view of it and, per block, the owner's version applied
/// last. Applies and the object's removal serialize on <see cref="Gate"/> (<see cref="LockLevel.DurableObject"/>).</summary>
internal sealed class ReplicaObject(ObjectState state, ObjectView view, ulong incarnation)
{
    public ObjectState State { get; } = state;

    public ObjectView View { get; } = view;

    public ulong Incarnation { get; } = incarnation;

    /// <summary>Per block, the owner's version applied (0: none). Only the apply loop writes it.</summary>
    public long[] Applied { get; } = new long[state.BlockCount];

    public object Gate { get; } = new();

    public bool Closed { get; set; }

    /// <summary>The highest watermark received and not yet applied (apply loop only).</summary>
    public long PendingWatermark { get; set; }
}

/// <summary>
/// The replica's side of a replicated container (docs/ARCHITECTURE.md §14): one ephemeral JetStream consumer over the
/// container's subjects, delivering the newest message of every subject first (DeliverPolicy LastPerSubject, in
/// stream order) and then every new one, applied in stream order by one loop. A block message is applied under the
/// local block's write lock, taken with the broker's slot like the applier of asynchronous writes, only when its
/// checksum matches, its epoch is not below the highest seen and its version is above the block's applied one;
/// a watermark raises the local object version to the owner's (<see cref="ObjectVersion.AdvanceTo"/>), but only once
/// the consumer has delivered everything the stream holds (NumPending 0). Before that it may not hold: the stream keeps
/// one message per block, so a block message the replica had not read yet when a newer write of that block was
/// published is gone, and the newer one comes after the watermark; the block's data at the watermark arrives only
/// then. At the stream's tail every block's newest message has been applied. (Under a continuous stream of writes
/// faster than the replica applies, versions advance only when it catches up; the data does not wait.) A gap in the
/// consumer's sequence (a message lost on the way), a consumer error, missed heartbeats, or a stall the watchdog sees
/// (<see cref="WatchAsync"/>: it asks the stream itself) restarts the consumer from the stream sequence after the last
/// one applied, so nothing is skipped; the watchdog also applies the watermarks when the stream says the follower is at
/// its tail.
/// </summary>
internal sealed class ReplicaFollower : IDisposable
{
    private readonly ReplicationService _service;
    private readonly NatsLink _link;
    private readonly ILogger _logger;
    private readonly Func<string, long, ObjectState?> _createObject;
    private readonly Action<string> _created;
    private readonly Action<ObjectState> _destroyObject;
    private readonly Action _destroyContainer;

    /// <summary>Per object name, the highest incarnation the owner destroyed (its tombstone was read; apply loop only):
    /// a message of that incarnation or an older one is late and dropped.</summary>
    private readonly Dictionary<string, ulong> _destroyed = new(StringComparer.Ordinal);
    private readonly Lock _objectsGate = new();
    private readonly Dictionary<string, ReplicaObject> _objects = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly LockWaitPolicy _waitPolicy = new();
    private readonly int _blockSize;
    private ulong _maxEpoch;
    private ulong _lastStreamSeq;
    private ulong _lastConsumerSeq;
    private long _lastDelivery; // Environment.TickCount64 of the last message delivered (the watchdog reads it)
    private Task? _loop;
    private INatsJSConsumer? _consumer;

    public ReplicaFollower(ReplicationService service, NatsLink link, Replication spec, string container, int blockSize,
        Func<string, long, ObjectState?> createObject, Action<string> created, Action<ObjectState> destroyObject, Action destroyContainer, ILogger logger)
    {
        _destroyObject = destroyObject;
        _destroyContainer = destroyContainer;
        _service = service;
        _link = link;
        Spec = spec;
        Container = container;
        _blockSize = blockSize;
        _createObject = createObject;
        _created = created;
        _logger = logger;
    }

    public Replication Spec { get; }

    public string Container { get; }

    /// <summary>Milliseconds between the last applied message's stream timestamp and its apply (the lag while the
    /// replica keeps up; a measure, not a bound).</summary>
    public double LagMs { get; private set; }

    /// <summary>The owner's container tombstone was read: the container was destroyed on the owner and this follower
    /// stopped.</summary>
    public bool ContainerDestroyed { get; private set; }

    /// <summary>Messages dropped: a checksum that did not match, an epoch below the highest seen.</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    private long _rejected;

    /// <summary>Creates the consumer (before the container is listed: a NATS failure is the create's error).</summary>
    /// <exception cref="BrokerError">IoError.</exception>
    public void Prepare(TimeSpan timeout)
    {
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            _consumer = CreateConsumerAsync(0, cts.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: cannot consume stream '{Spec.Stream}' for '{Container}': {e.Message}");
        }
    }

    private async Task<INatsJSConsumer> CreateConsumerAsync(ulong fromSeq, CancellationToken token)
    {
        // A name of our own: without one NATS.Net leaves the name token out of the create subject, and 2.9 then reads
        // the stream's first filter token as the name ("did not match filtered subject"). Not durable: it goes away
        // after InactiveThreshold without a pull (a replica that died).
        var config = new ConsumerConfig
        {
            Name = "ss-" + Guid.NewGuid().ToString("N"),
            FilterSubject = ReplicationNames.ContainerSubjects(Spec.Stream, Container), // singular: 2.9 refuses FilterSubjects
            AckPolicy = ConsumerConfigAckPolicy.None,
            InactiveThreshold = TimeSpan.FromMinutes(5),
            MemStorage = true,
        };
        if (fromSeq == 0)
        {
            config.DeliverPolicy = ConsumerConfigDeliverPolicy.LastPerSubject;
        }
        else
        {
            config.DeliverPolicy = ConsumerConfigDeliverPolicy.ByStartSequence;
            config.OptStartSeq = fromSeq;
        }

        return await _link.JetStream.CreateOrUpdateConsumerAsync(Spec.Stream, config, token).ConfigureAwait(false);
    }

    /// <summary>
    /// Failover (docs/ARCHITECTURE.md §14): applies, on the calling thread, what the stream holds of the container (the
    /// consumer made by <see cref="Prepare"/> delivers the newest message of every subject) until the message that
    /// left nothing pending, then the watermarks; the loop is never started. Then <see cref="Detach"/> hands the objects
    /// to the new owner.
    /// </summary>
    /// <exception cref="BrokerError">IoError (NATS failed), Timeout.</exception>
    public void CatchUp(TimeSpan timeout)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        cts.CancelAfter(timeout);
        BrokerError Destroyed() => new(ErrorCode.NotFound, $"takeover of '{Container}': its owner destroyed it (the stream holds its tombstone)");
        try
        {
            CatchUpAsync(cts.Token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (ContainerDestroyed)
        {
            throw Destroyed();
        }
        catch (OperationCanceledException)
        {
            throw new BrokerError(ErrorCode.Timeout, $"takeover of '{Container}': the stream's state was not read within {timeout.TotalSeconds:0.#} s");
        }
        catch (NatsException e)
        {
            throw new BrokerError(ErrorCode.IoError, $"takeover of '{Container}': reading the stream: {e.Message}");
        }

        if (ContainerDestroyed)
        {
            throw Destroyed(); // its tombstone was the stream's last message
        }
    }

    private async Task CatchUpAsync(CancellationToken token)
    {
        var consumer = _consumer ?? throw new InvalidOperationException("Prepare first");
        if (consumer.Info.NumPending > 0)
        {
            ulong lastConsumerSeq = 0;
            await foreach (var msg in consumer.ConsumeAsync<byte[]>(opts: new NatsJSConsumeOpts { MaxMsgs = 32 }, cancellationToken: token).ConfigureAwait(false))
            {
                if (msg.Metadata is not { } meta)
                {
                    throw new NatsException($"a message of '{msg.Subject}' without its metadata");
                }

                if (lastConsumerSeq != 0 && meta.Sequence.Consumer != lastConsumerSeq + 1)
                {
                    throw new NatsException($"consumer gap after stream sequence {_lastStreamSeq}");
                }

                Handle(msg.Subject, msg.Headers, msg.Data ?? []);
                lastConsumerSeq = meta.Sequence.Consumer;
                _lastStreamSeq = meta.Sequence.Stream;
                if (meta.NumPending == 0)
                {
                    break;
                }
            }
        }

        ApplyWatermarks();
        try
        {
            await _link.JetStream.DeleteConsumerAsync(Spec.Stream, consumer.Info.Name, token).ConfigureAwait(false);
        }
        catch (NatsException)
        {
            // ephemeral: the server drops it after its inactive threshold anyway
        }
    }

    /// <summary>After <see cref="CatchUp"/>: the objects, each with its incarnation and the owner's version applied to
    /// each block; the follower's own views are closed (the new owner makes its own).</summary>
    public List<(ObjectState State, ulong Incarnation, long[] Applied)> Detach()
    {
        _stop.Cancel();
        List<ReplicaObject> objects;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            objects = [.. _objects.Values];
            _objects.Clear();
        }

        var list = new List<(ObjectState, ulong, long[])>(objects.Count);
        foreach (var o in objects)
        {
            using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
            {
                o.Closed = true;
            }

            o.View.Dispose();
            list.Add((o.State, o.Incarnation, o.Applied));
        }

        return list;
    }

    /// <summary>The consumer's idle heartbeat: two missed ones (the server or the consumer is gone) restart it.</summary>
    private static readonly TimeSpan ConsumerHeartbeat = TimeSpan.FromSeconds(1);

    /// <summary>How long nothing may arrive before <see cref="WatchAsync"/> asks the cluster about the consumer.</summary>
    private static readonly TimeSpan StallTime = TimeSpan.FromSeconds(3);

    /// <summary>Starts the apply loop (after the container is in the model).</summary>
    public void Start() => _loop = Task.Run(RunAsync);

    private async Task RunAsync()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                if (_consumer is null)
                {
                    _consumer = await CreateConsumerAsync(_lastStreamSeq + 1, token).ConfigureAwait(false);
                    Log.ReplicaConsumerStarted(_logger, Container, _consumer.Info.Name, _lastStreamSeq + 1);
                }

                _lastConsumerSeq = 0;

                // The consumer is ephemeral with one replica: it lives on one server, and when that server dies the
                // pulls find no one (the client reconnects to another server of the list, but the consumer is gone).
                // NATS.Net does not end the enumeration then; it reports missed heartbeats and 503s as notifications.
                // Either one ends this consumption, and the loop makes a new consumer after the last message applied
                // (redeliveries are ignored: a block's version never goes back).
                using var restart = CancellationTokenSource.CreateLinkedTokenSource(token);
                var opts = new NatsJSConsumeOpts
                {
                    MaxMsgs = 32,
                    IdleHeartbeat = ConsumerHeartbeat,
                    Expires = ConsumerHeartbeat * 5,
                    NotificationHandler = (n, unused) =>
                    {
                        if (n is NatsJSTimeoutNotification or NatsJSNoRespondersNotification)
                        {
                            Log.ReplicationFailed(_logger, Container, $"consumer: {n.Name}; restarting after stream sequence {Volatile.Read(ref _lastStreamSeq)}");

                            // Not Cancel(): it runs the consumption's cancellation callbacks on this thread, the
                            // client's notification loop, and they wait for that loop; the consumption then never
                            // ended (seen under load: the replica stopped at its version for good).
                            try
                            {
                                _ = restart.CancelAsync();
                            }
                            catch (ObjectDisposedException)
                            {
                                // a late notification of a consumption that has ended
                            }
                        }

                        return Task.CompletedTask;
                    },
                };
                Volatile.Write(ref _lastDelivery, Environment.TickCount64);
                _ = WatchAsync(_consumer, restart);
                try
                {
                    await foreach (var msg in _consumer.ConsumeAsync<byte[]>(opts: opts, cancellationToken: restart.Token).ConfigureAwait(false))
                    {
                        Volatile.Write(ref _lastDelivery, Environment.TickCount64);
                        var meta = msg.Metadata;
                        if (meta is { } m && _lastConsumerSeq != 0 && m.Sequence.Consumer != _lastConsumerSeq + 1)
                        {
                            // A message was lost on the way: start again after the last one applied.
                            Log.ReplicationFailed(_logger, Container, $"consumer gap after stream sequence {_lastStreamSeq}: restarting the consumer");
                            break;
                        }

                        Handle(msg.Subject, msg.Headers, msg.Data ?? []);
                        if (meta is { } done)
                        {
                            _lastConsumerSeq = done.Sequence.Consumer;
                            _lastStreamSeq = done.Sequence.Stream;
                            LagMs = Math.Max(0, (DateTimeOffset.UtcNow - done.Timestamp).TotalMilliseconds);
                        }

                        if (meta is null || meta.Value.NumPending == 0)
                        {
                            ApplyWatermarks();
                        }
                    }
                }
                finally
                {
                    restart.Cancel(); // ends the watchdog before the source is disposed
                }
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (!token.IsCancellationRequested)
            {
                // Anything: this loop is the replica's only way forward, and a fault here would leave the container
                // at its last version for good (the client library's channels, a disposed subscription, an apply
                // that failed: each is logged and the consumer made again after the last message applied).
                Log.ReplicationFailed(_logger, Container, $"consumer: {e.GetType().Name}: {e.Message}; restarting after stream sequence {_lastStreamSeq}");
                try
                {
                    await Task.Delay(200, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }

            if (_consumer is { } abandoned)
            {
                _ = DeleteConsumerAsync(abandoned.Info.Name); // else it lingers on its server for InactiveThreshold
            }

            _consumer = null;
        }
    }

    /// <summary>
    /// The watchdog of one consumption: once nothing has been delivered for <see cref="StallTime"/>, asks the stream
    /// (<see cref="HasMessageFromAsync"/>) whether it holds a message of the container after the last one applied.
    /// If so the consumption has stalled and is restarted; if not, the follower is at the tail and the watermarks
    /// received are applied. Seen under load after kill -9 of a node: pulls went unanswered with no heartbeat
    /// notification and no error, and the consumer's NumPending on the last message was stale, so the replica stayed
    /// at its version for good. Costs one request per period, only while nothing arrives.
    /// </summary>
    private async Task WatchAsync(INatsJSConsumer consumer, CancellationTokenSource restart)
    {
        var ct = restart.Token;
        try
        {
            while (true)
            {
                await Task.Delay(ConsumerHeartbeat * 2, ct).ConfigureAwait(false);
                if (Environment.TickCount64 - Volatile.Read(ref _lastDelivery) < StallTime.TotalMilliseconds)
                {
                    continue;
                }

                string? why = null;
                try
                {
                    using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    cts.CancelAfter(ConsumerHeartbeat * 2);
                    ulong last = Volatile.Read(ref _lastStreamSeq);
                    if (await HasMessageFromAsync(last + 1, cts.Token).ConfigureAwait(false))
                    {
                        why = $"the stream holds a message of the container after sequence {last}, and none was delivered for {StallTime.TotalSeconds:0} s";
                    }
                    else if (Volatile.Read(ref _lastStreamSeq) == last)
                    {
                        // At the tail by the stream's own answer, every message up to it applied: the watermarks
                        // received hold (class comment). The consumer's NumPending said otherwise after a node's
                        // kill -9 (a stale count on the last message), and the versions stayed behind for good.
                        ApplyWatermarks();
                    }
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    why = "the stream does not answer";
                }
                catch (NatsException e)
                {
                    why = e.Message;
                }

                if (why is not null)
                {
                    Log.ReplicationFailed(_logger, Container, $"consumer stalled: {why}; restarting after stream sequence {Volatile.Read(ref _lastStreamSeq)}");
                    restart.Cancel();
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The consumption ended.
        }
    }

    /// <summary>Whether the stream holds a message of this container at or after stream sequence
    /// <paramref name="from"/>: the stream's own answer (its leader's), not the consumer's, which after a node's
    /// kill -9 claimed to have nothing pending while the stream held messages it never delivered. The JetStream API's
    /// message get with <c>next_by_subj</c> (nats-server 2.9), as a plain request.</summary>
    private async Task<bool> HasMessageFromAsync(ulong from, CancellationToken token)
    {
        string request = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["seq"] = from,
            ["next_by_subj"] = ReplicationNames.ContainerSubjects(Spec.Stream, Container),
        });
        var reply = await _link.JetStream.Connection.RequestAsync<byte[], byte[]>(
            $"$JS.API.STREAM.MSG.GET.{Spec.Stream}", Encoding.UTF8.GetBytes(request), cancellationToken: token).ConfigureAwait(false);
        using var doc = JsonDocument.Parse(reply.Data ?? []);
        if (doc.RootElement.TryGetProperty("message", out _))
        {
            return true;
        }

        if (doc.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("code", out var code) && code.GetInt32() == 404)
        {
            return false; // no message at or after it: the follower is at the tail
        }

        throw new NatsException($"message get: {Encoding.UTF8.GetString(reply.Data ?? [])}");
    }

    /// <summary>Best effort: deletes a consumer this follower gave up (its server may be the one that is gone).</summary>
    private async Task DeleteConsumerAsync(string name)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _link.JetStream.DeleteConsumerAsync(Spec.Stream, name, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            // It goes away by itself after InactiveThreshold.
        }
    }

    private static bool TryHeader(NatsHeaders? h, string name, out string value)
    {
        value = "";
        if (h is null || !h.TryGetValue(name, out var v) || v.Count == 0)
        {
            return false;
        }

        value = v[0] ?? "";
        return true;
    }

    private static bool TryLong(NatsHeaders? h, string name, out long value)
    {
        value = 0;
        return TryHeader(h, name, out string s) && long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    private static bool TryULong(NatsHeaders? h, string name, out ulong value)
    {
        value = 0;
        return TryHeader(h, name, out string s) && ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>One message, in stream order (the apply loop only).</summary>
    private void Handle(string subject, NatsHeaders? h, byte[] data)
    {
        if (!ReplicationNames.TryParse(subject, out char kind, out string name, out long block)
            || !TryLong(h, ReplicationHeaders.Version, out long version) || !TryULong(h, ReplicationHeaders.Epoch, out ulong epoch)
            || !TryULong(h, ReplicationHeaders.Incarnation, out ulong incarnation) || !TryLong(h, ReplicationHeaders.Size, out long size))
        {
            Reject($"malformed message on '{subject}'");
            return;
        }

        if (epoch < _maxEpoch)
        {
            Reject($"'{subject}' of epoch {epoch}, below {_maxEpoch}: a fenced owner's message");
            return;
        }

        _maxEpoch = epoch;
        if (kind == 'd')
        {
            // The owner destroyed the container: its last message. Nothing after it is applied (a container created
            // again under the name is another one), and the local container goes as a local destroy would.
            ContainerDestroyed = true;
            _stop.Cancel();
            _destroyContainer();
            return;
        }

        // Incarnations of one name only grow on the owner ((epoch << 32) | object id: ids are never reused by a
        // broker, epochs only rise), so one older than what this replica holds or saw destroyed is a late message of a
        // destroyed object, never applied to a newer one (docs/ARCHITECTURE.md §14.2).
        bool known = _destroyed.TryGetValue(name, out ulong dead);
        if (kind == 'o' && TryHeader(h, ReplicationHeaders.Destroyed, out string tomb) && tomb == "1")
        {
            _destroyed[name] = known ? Math.Max(dead, incarnation) : incarnation;
            DestroyObject(name, incarnation);
            return;
        }

        if (known && incarnation <= dead)
        {
            Reject($"'{subject}' of incarnation {incarnation:x}: that object was destroyed on the owner");
            return;
        }

        var o = Object(name, size, incarnation);
        if (o is null)
        {
            return;
        }

        using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
        {
            if (o.Closed)
            {
                return;
            }

            switch (kind)
            {
                case 'b':
                    ApplyBlock(o, block, version, h, data);
                    break;
                case 'w':
                    o.PendingWatermark = Math.Max(o.PendingWatermark, version); // applied once caught up (class comment)
                    break;
            }
        }
    }

    /// <summary>The consumer has delivered every message the stream held: every block's newest message is applied, so
    /// each watermark received holds now (see the class comment) and the objects' versions are raised to them.</summary>
    private unsafe void ApplyWatermarks()
    {
        List<ReplicaObject> objects;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            objects = [.. _objects.Values];
        }

        foreach (var o in objects)
        {
            // Under the object's gate, read and cleared together: the watchdog may call this beside the apply loop
            // (WatchAsync), whose Handle records watermarks under the same gate.
            using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
            {
                if (o.PendingWatermark != 0 && !o.Closed)
                {
                    ObjectVersion.AdvanceTo(o.View.Locks, o.PendingWatermark);
                }

                o.PendingWatermark = 0;
            }
        }
    }

    private void Reject(string why)
    {
        Interlocked.Increment(ref _rejected);
        Log.ReplicationRejected(_logger, Container, why);
    }

    /// <summary>The local object of that name and incarnation, created on its first message; null when the message
    /// belongs to another incarnation (an object destroyed and created again on the owner: not applied here).</summary>
    private ReplicaObject? Object(string name, long size, ulong incarnation)
    {
        ReplicaObject? o;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            _objects.TryGetValue(name, out o);
        }

        if (o is null)
        {
            if (size <= 0)
            {
                return null;
            }

            var state = _createObject(name, size); // takes the model lock: no gate of ours is held here
            if (state is null)
            {
                return null;
            }

            using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
            {
                if (!_objects.TryGetValue(name, out o))
                {
                    o = new ReplicaObject(state, state.Segment.BrokerView(state, _blockSize, durable: false, repair: null), incarnation);
                    _objects[name] = o;
                }
            }

            _created(name); // the name's waiters (WaitForObject) return
        }

        if (o.Incarnation > incarnation)
        {
            Reject($"object '{name}' of incarnation {incarnation:x}, this replica holds the newer {o.Incarnation:x}");
            return null;
        }

        if (o.Incarnation < incarnation)
        {
            // Destroyed and created again on the owner, and the tombstone not read (purged before this consumer
            // reached it, or never published): the new incarnation replaces the old one here too.
            DestroyObject(name, o.Incarnation);
            return Object(name, size, incarnation);
        }

        return o;
    }

    /// <summary>The owner destroyed the object of that name up to incarnation <paramref name="upTo"/>: it leaves this
    /// follower (its view closed: no apply touches it again) and the registry destroys it as a local destroy would
    /// (freed when no member uses it). Apply loop only, holding none of the follower's locks.</summary>
    private void DestroyObject(string name, ulong upTo)
    {
        ReplicaObject? o;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            if (!_objects.TryGetValue(name, out o) || o.Incarnation > upTo)
            {
                return;
            }

            _objects.Remove(name);
        }

        using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
        {
            o.Closed = true;
        }

        o.View.Dispose();
        _destroyObject(o.State); // takes the model lock
    }

    private unsafe void ApplyBlock(ReplicaObject o, long b, long version, NatsHeaders? h, byte[] data)
    {
        if (b < 0 || b >= o.State.BlockCount)
        {
            Reject($"block {b} outside object '{o.State.Name}'");
            return;
        }

        if (version <= o.Applied[b])
        {
            return; // already applied (a restarted consumer delivers again), or older: never go back
        }

        int length = (int)Math.Min(_blockSize, o.State.Size - (b * _blockSize));
        uint crc;
        fixed (byte* p = data)
        {
            crc = DurableFileDescriptor.Crc32C(p, data.Length);
        }

        if (data.Length != length || !TryHeader(h, ReplicationHeaders.Crc, out string c)
            || !uint.TryParse(c, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint expected) || expected != crc)
        {
            Reject($"block {b} of '{o.State.Name}' version {version}: length {data.Length} (want {length}) or checksum does not match");
            return;
        }

        bool torn = TryHeader(h, ReplicationHeaders.Torn, out string t) && t == "1";
        var range = new BlockRange(o.View, b, b);
        var wait = o.View.Wait(_waitPolicy, Timeout.InfiniteTimeSpan, _stop.Token);
        if (range.AcquireWrite(ref wait) != LockStatus.Acquired)
        {
            return; // stopping
        }

        ObjectVersion.BeginWrite(o.View, b, b);
        data.AsSpan().CopyTo(new Span<byte>(o.View.Data + (b * (long)_blockSize), length));
        ObjectVersion.PublishBlockAt(o.View, b, version);
        if (torn)
        {
            range.ReleaseWriteTorn();
        }
        else
        {
            range.ReleaseWrite(b * (long)_blockSize, length);
        }

        o.Applied[b] = version;
        _service.CountApplied(length);
    }

    /// <summary>Under the model lock, before the object's memory is freed: waits for an apply that holds it.</summary>
    public void RemoveObject(ObjectState state)
    {
        ReplicaObject? o;
        using (LockOrder.Enter(_objectsGate, LockLevel.DurableCatalog))
        {
            if (!_objects.TryGetValue(state.Name, out o) || o.State != state)
            {
                return;
            }

            _objects.Remove(state.Name);
        }

        using (LockOrder.Enter(o.Gate, LockLevel.DurableObject))
        {
            o.Closed = true;
        }

        o.View.Dispose();
    }

    /// <summary>Stops the loop: an apply waiting for a block lock gives up at once. Does not wait (called under the
    /// model lock; the loop may be waiting for it to create an object).</summary>
    public void Close() => _stop.Cancel();

    public void Dispose()
    {
        _stop.Cancel();
        try
        {
            _loop?.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
            // the loop ends with the cancellation
        }
    }
}
