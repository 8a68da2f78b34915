using Google.Protobuf;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.KeyValueStore;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// The broker's replication over NATS JetStream (docs/ARCHITECTURE.md §14): its NATS connections (one per server list,
/// made on first use and kept), the owners and replicas it runs, and the totals for metrics. Everything that talks to
/// NATS lives in <c>Replication/</c>; <see cref="ContainerRegistry"/> calls <see cref="PrepareOwner"/> and
/// <see cref="PrepareReplica"/> before it takes the model lock (NATS round trips never run under it) and records what
/// they return in the container.
/// </summary>
internal sealed class ReplicationService : IDisposable
{
    /// <summary>How long a NATS request made for a client call (connect, stream, bucket, lease, catalog) may take.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    private readonly Dictionary<string, NatsLink> _links = new(StringComparer.Ordinal);
    private readonly List<ReplicatedOwner> _owners = [];
    private readonly List<ReplicaFollower> _replicas = [];
    private readonly ILogger _logger;
    private long _bytesPublished;
    private long _bytesApplied;
    private long _failovers;
    private bool _disposed;

    public ReplicationService(BrokerOptions options, ILogger logger)
    {
        Options = options;
        _logger = logger;
        if (options.NatsUrl is { Length: > 0 } url)
        {
            // Connect to the broker's own servers in the background at start, so that the first replicated create
            // (a failover's takeover above all) does not pay for the connection: 0.4-0.7 s on the loaded test machine.
            _ = Task.Run(() =>
            {
                try
                {
                    Link(url);
                }
                catch (Exception e) when (e is BrokerError or ObjectDisposedException)
                {
                    Log.ReplicationFailed(_logger, "(none)", $"connecting to --nats at start: {e.Message} (tried again on first use)");
                }
            });
        }
    }

    public BrokerOptions Options { get; }

    /// <summary>"host pid socket": this broker, in leases and the catalog.</summary>
    public string Identity => $"{Environment.MachineName} {Environment.ProcessId} {Options.SocketPath}";

    public long BytesPublished => Interlocked.Read(ref _bytesPublished);

    public long BytesApplied => Interlocked.Read(ref _bytesApplied);

    public void CountPublished(long bytes) => Interlocked.Add(ref _bytesPublished, bytes);

    public void CountApplied(long bytes) => Interlocked.Add(ref _bytesApplied, bytes);

    /// <summary>Ownerships this broker took over from an owner whose lease had expired (the failover code counts each
    /// with <see cref="CountFailover"/>).</summary>
    public long Failovers => Interlocked.Read(ref _failovers);

    public void CountFailover() => Interlocked.Increment(ref _failovers);

    /// <summary>The highest <see cref="ReplicaFollower.LagMs"/> of this broker's replica containers (0 with none).</summary>
    public double MaxReplicaLagMs()
    {
        lock (_replicas)
        {
            return _replicas.Count == 0 ? 0 : _replicas.Max(r => r.LagMs);
        }
    }

    /// <summary>The lease value this broker writes (create and heartbeats).</summary>
    public ReplicaLease Lease(ulong epoch) => new()
    {
        Owner = Identity,
        Epoch = epoch,
        HeartbeatUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        LeaseMs = (uint)Options.ReplicationLease.TotalMilliseconds,
    };

    /// <summary>The request's settings with the defaults filled in and checked: the server list (the caller's only for
    /// root or the broker's own user; else the broker's <c>--nats</c>), stream and bucket names.</summary>
    /// <exception cref="BrokerError">PermissionDenied, InvalidArgument.</exception>
    public Replication Resolve(Replication req, PeerCredentials who)
    {
        var r = req.Clone();
        if (r.NatsUrl.Length > 0)
        {
            if (!who.IsRoot && who.Uid != Interop.Libc.geteuid() && r.NatsUrl != Options.NatsUrl)
            {
                throw new BrokerError(ErrorCode.PermissionDenied, "replication: only root or the broker's own user may name NATS servers other than the broker's --nats");
            }
        }
        else
        {
            r.NatsUrl = Options.NatsUrl ?? throw new BrokerError(ErrorCode.InvalidArgument, "replication: no NATS server (give ReplicationOptions.NatsUrl or start the broker with --nats)");
        }

        r.Stream = r.Stream.Length == 0 ? ReplicationNames.DefaultStream : r.Stream;
        r.Bucket = r.Bucket.Length == 0 ? ReplicationNames.DefaultBucket : r.Bucket;
        r.StreamReplicas = Math.Max(1, r.StreamReplicas);
        if (!ReplicationNames.IsValidStreamName(r.Stream) || !ReplicationNames.IsValidStreamName(r.Bucket))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, "replication: a stream or bucket name is 1 to 64 letters, digits, '-' or '_'");
        }

        if (r.StreamReplicas > 5)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, "replication: stream replicas are 1 to 5");
        }

        return r;
    }

    private NatsLink Link(string url)
    {
        lock (_links)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_links.TryGetValue(url, out var link))
            {
                link = NatsLink.Connect(url, RequestTimeout);
                _links[url] = link;
            }

            return link;
        }
    }

    private static T Run<T>(Func<CancellationToken, Task<T>> call, string what)
    {
        try
        {
            using var cts = new CancellationTokenSource(RequestTimeout);
            return call(cts.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: {what}: {e.Message}");
        }
    }

    /// <summary>
    /// The owner's side of a create, before the model lock: the stream and bucket (made when missing), the lease
    /// (a KV create: refused when the key exists, so two brokers never both own a container), the stream's old messages
    /// of that name purged (a container destroyed without cleanup, or whose owner died and whose lease was removed),
    /// and the catalog entry. The owner is not started: <see cref="StartOwner"/> once the container is in the model,
    /// <see cref="Abandon(ReplicatedOwner)"/> if it never gets there.
    /// </summary>
    /// <exception cref="BrokerError">AlreadyExists (a lease exists: another broker owns it, or its owner died and the
    /// lease awaits failover); IoError.</exception>
    public ReplicatedOwner PrepareOwner(Replication spec, ReplicaContainerMeta meta)
    {
        meta.Owner = Identity;
        string name = meta.Name;
        var link = Link(spec.NatsUrl);
        Run(async t => { await link.EnsureStreamAsync(spec.Stream, (int)spec.StreamReplicas, t).ConfigureAwait(false); return 0; }, $"stream '{spec.Stream}'");
        var kv = Run(t => link.BucketAsync(spec.Bucket, (int)spec.StreamReplicas, t), $"bucket '{spec.Bucket}'");
        string leaseKey = ReplicationNames.LeaseKey(name);
        ulong revision;
        try
        {
            using var cts = new CancellationTokenSource(RequestTimeout);
            revision = kv.CreateAsync(leaseKey, Lease(0).ToByteArray(), cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (NatsKVCreateException)
        {
            string holder = "";
            try
            {
                using var cts = new CancellationTokenSource(RequestTimeout);
                var entry = kv.GetEntryAsync<byte[]>(leaseKey, cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
                var lease = ReplicaLease.Parser.ParseFrom(entry.Value ?? []);
                holder = $" by '{lease.Owner}', heartbeat {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - lease.HeartbeatUnixMs} ms ago";
            }
            catch (Exception e) when (e is NatsException or OperationCanceledException or InvalidProtocolBufferException)
            {
                // the refusal stands; only the detail is missing
            }

            throw new BrokerError(ErrorCode.AlreadyExists, $"replicated container '{name}' is owned already{holder} (lease key '{leaseKey}' in bucket '{spec.Bucket}')");
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: lease of '{name}': {e.Message}");
        }

        // The epoch is the create's revision: above every revision the key had before, so above every earlier owner's.
        ulong epoch = revision;
        try
        {
            ulong created = revision;
            revision = Run(t => kv.UpdateAsync(leaseKey, Lease(epoch).ToByteArray(), created, cancellationToken: t).AsTask(), "lease");
            Run(async t =>
            {
                var stream = await link.JetStream.GetStreamAsync(spec.Stream, cancellationToken: t).ConfigureAwait(false);
                await stream.PurgeAsync(new NATS.Client.JetStream.Models.StreamPurgeRequest { Filter = ReplicationNames.ContainerSubjects(spec.Stream, name) }, t).ConfigureAwait(false);
                return 0;
            }, "purge of old messages");
            Run(t => kv.PutAsync(ReplicationNames.ContainerKey(name), meta.ToByteArray(), cancellationToken: t).AsTask(), "catalog");
        }
        catch (BrokerError)
        {
            Abandon(kv, name, revision);
            throw;
        }

        return new ReplicatedOwner(this, link, kv, spec, name, epoch, revision, _logger);
    }

    /// <summary>
    /// Failover, before the model lock (docs/ARCHITECTURE.md §14, "Failover"): takes the ownership lease of
    /// <paramref name="name"/> from an owner that stopped refreshing it. The lease must stay at the same revision for
    /// 1.5 of its lease times as this broker's clock measures them (no clocks are compared, only their rates): an owner
    /// that is alive refreshes it every third of a lease time, and one cut off from NATS fences itself within about
    /// 1.43 of them (a refresh is tried every tenth, and each may take a third before it fails). Then a revision-checked
    /// update takes it; that update's revision is the new epoch (above every revision the key had, so above the old
    /// owner's epoch), written into the lease by a second checked update. The catalog entry names the new owner.
    /// </summary>
    /// <exception cref="BrokerError">AlreadyExists (the lease was refreshed meanwhile: the owner is alive; or another
    /// broker took it first); IoError; Canceled (the request's token).</exception>
    public (ReplicatedOwner Owner, int BlockSize, long WaitMs, long TakeMs) TakeLease(Replication spec, NatsLink link, ReplicaContainerMeta meta, CancellationToken token)
    {
        long waitMs = 0;
        string name = meta.Name;
        string key = ReplicationNames.LeaseKey(name);
        var kv = Run(t => link.KeyValue.GetStoreAsync(spec.Bucket, t).AsTask(), $"bucket '{spec.Bucket}'");
        NatsKVEntry<byte[]>? Read()
        {
            try
            {
                using var cts = new CancellationTokenSource(RequestTimeout);
                return kv.GetEntryAsync<byte[]>(key, cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is NatsKVKeyNotFoundException or NatsKVKeyDeletedException)
            {
                return null;
            }
            catch (Exception e) when (e is NatsException or OperationCanceledException)
            {
                throw new BrokerError(ErrorCode.IoError, $"replication: lease of '{name}': {e.Message}");
            }
        }

        ulong revision;
        var seen = Read();
        try
        {
            if (seen is { } held)
            {
                var lease = ReplicaLease.Parser.ParseFrom(held.Value ?? []);
                long wait = Math.Max(1, (long)lease.LeaseMs) * 3 / 2;
                var since = System.Diagnostics.Stopwatch.StartNew();
                long poll = Math.Clamp(wait / 15, 5, 200);
                while (since.ElapsedMilliseconds < wait)
                {
                    if (token.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(Math.Min(poll, Math.Max(1, wait - since.ElapsedMilliseconds)))))
                    {
                        throw new BrokerError(ErrorCode.Canceled, $"takeover of '{name}' canceled");
                    }

                    if (Read() is not { } now || now.Revision != held.Revision)
                    {
                        throw new BrokerError(ErrorCode.AlreadyExists, $"replicated container '{name}' is owned by a live broker: its lease was refreshed during the takeover's wait (owner '{lease.Owner}')");
                    }
                }

                waitMs = since.ElapsedMilliseconds;
                ulong taken = held.Revision;
                revision = Run(t => kv.UpdateAsync(key, Lease(0).ToByteArray(), taken, cancellationToken: t).AsTask(), "lease takeover");
            }
            else
            {
                using var cts = new CancellationTokenSource(RequestTimeout);
                revision = kv.CreateAsync(key, Lease(0).ToByteArray(), cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
            }
        }
        catch (Exception e) when (e is NatsKVWrongLastRevisionException or NatsKVCreateException)
        {
            throw new BrokerError(ErrorCode.AlreadyExists, $"replicated container '{name}': another broker wrote its lease first (a heartbeat or another takeover)");
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: the lease of '{name}' is not valid: {e.Message}");
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: lease of '{name}': {e.Message}");
        }

        var taking = System.Diagnostics.Stopwatch.StartNew();
        ulong epoch = revision;
        ulong took = revision;
        revision = Run(t => kv.UpdateAsync(key, Lease(epoch).ToByteArray(), took, cancellationToken: t).AsTask(), "lease");
        meta.Owner = Identity;
        Run(t => kv.PutAsync(ReplicationNames.ContainerKey(name), meta.ToByteArray(), cancellationToken: t).AsTask(), "catalog");
        return (new ReplicatedOwner(this, link, kv, spec, name, epoch, revision, _logger), (int)meta.BlockSize, waitMs, taking.ElapsedMilliseconds);
    }

    public void StartOwner(ReplicatedOwner owner)
    {
        lock (_owners)
        {
            _owners.Add(owner);
        }

        owner.Start();
    }

    /// <summary>A prepared owner whose container did not make it into the model: its lease is deleted again.</summary>
    public void Abandon(ReplicatedOwner owner) => owner.Close(purge: true);

    private void Abandon(INatsKVStore kv, string container, ulong revision)
    {
        try
        {
            using var cts = new CancellationTokenSource(RequestTimeout);
            kv.DeleteAsync(ReplicationNames.LeaseKey(container), new NatsKVDeleteOpts { Revision = revision }, cts.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException)
        {
            Log.ReplicationFailed(_logger, container, $"lease not deleted after a failed create: {e.Message}");
        }
    }

    /// <summary>The replica's side of a create, before the model lock: the catalog entry of the container (its block
    /// size, group, write policy, max members) and the consumer.</summary>
    /// <exception cref="BrokerError">NotFound (no such replicated container in the catalog); IoError.</exception>
    public (ReplicaContainerMeta Meta, NatsLink Link) ReadCatalog(Replication spec, string name)
    {
        var link = Link(spec.NatsUrl);
        INatsKVStore kv;
        try
        {
            using var cts = new CancellationTokenSource(RequestTimeout);
            kv = link.KeyValue.GetStoreAsync(spec.Bucket, cts.Token).AsTask().GetAwaiter().GetResult();
            var entry = kv.GetEntryAsync<byte[]>(ReplicationNames.ContainerKey(name), cancellationToken: cts.Token).AsTask().GetAwaiter().GetResult();
            return (ReplicaContainerMeta.Parser.ParseFrom(entry.Value ?? []), link);
        }
        catch (Exception e) when (e is NatsKVKeyNotFoundException or NatsKVKeyDeletedException
            || (e is NATS.Client.JetStream.NatsJSApiException j && j.Error.Code == 404))
        {
            throw new BrokerError(ErrorCode.NotFound, $"replicated container '{name}' is not in the catalog of bucket '{spec.Bucket}'");
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException or InvalidProtocolBufferException)
        {
            throw new BrokerError(ErrorCode.IoError, $"replication: catalog of '{name}': {e.Message}");
        }
    }

    /// <summary>The follower of a replica container (and of a takeover's reading of the stream). The callbacks run on its
    /// loop, which holds none of its locks then: <paramref name="createObject"/> makes a local object,
    /// <paramref name="created"/> tells the name's waiters, <paramref name="destroyObject"/> and
    /// <paramref name="destroyContainer"/> follow the owner's destroys (docs/ARCHITECTURE.md §14.2).</summary>
    public ReplicaFollower PrepareReplica(Replication spec, NatsLink link, string name, int blockSize, Func<string, long, ObjectState?> createObject, Action<string> created,
        Action<ObjectState> destroyObject, Action destroyContainer)
    {
        var follower = new ReplicaFollower(this, link, spec, name, blockSize, createObject, created, destroyObject, destroyContainer, _logger);
        follower.Prepare(RequestTimeout);
        return follower;
    }

    public void StartReplica(ReplicaFollower follower)
    {
        lock (_replicas)
        {
            _replicas.Add(follower);
        }

        follower.Start();
    }

    /// <summary>A container was freed: its owner or replica leaves the lists.</summary>
    public void Forget(ReplicatedOwner? owner, ReplicaFollower? replica)
    {
        if (owner is not null)
        {
            lock (_owners)
            {
                _owners.Remove(owner);
            }
        }

        if (replica is not null)
        {
            lock (_replicas)
            {
                _replicas.Remove(replica);
            }
        }
    }

    /// <summary>Broker shutdown: owners stop (the stream keeps what they published; their leases expire), replicas
    /// stop consuming, connections close.</summary>
    public void Dispose()
    {
        List<ReplicatedOwner> owners;
        List<ReplicaFollower> replicas;
        lock (_owners)
        {
            owners = [.. _owners];
        }

        lock (_replicas)
        {
            replicas = [.. _replicas];
        }

        foreach (var o in owners)
        {
            o.Dispose();
        }

        foreach (var r in replicas)
        {
            r.Dispose();
        }

        lock (_links)
        {
            _disposed = true;
            foreach (var link in _links.Values)
            {
                link.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
            }

            _links.Clear();
        }
    }
}
