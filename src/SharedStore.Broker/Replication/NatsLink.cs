using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using NATS.Client.KeyValueStore;

namespace SharedStore.Broker;

/// <summary>Two connections to a NATS cluster (a server list), shared by every replicated container of the broker that
/// names the same servers: one for the stream's block messages (<see cref="JetStream"/>), one for the key-value bucket
/// (<see cref="KeyValue"/>: the catalog and the ownership lease). Two, because one socket carries its writes in order:
/// a lease heartbeat queued behind up to 16 MiB of block messages (64 MiB before) on a stream that takes 20-40 MB/s here waited
/// seconds, and an owner under load fenced itself while it was publishing. NATS.Net reconnects by itself; calls made
/// while it is away wait (bounded by the caller's token) or fail.</summary>
internal sealed class NatsLink : IAsyncDisposable
{
    private readonly Dictionary<string, INatsKVStore> _buckets = new(StringComparer.Ordinal);
    private readonly HashSet<string> _streams = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _setup = new(1, 1);

    private readonly NatsConnection _data;
    private readonly NatsConnection _control;

    private NatsLink(NatsConnection data, NatsConnection control)
    {
        _data = data;
        _control = control;
        JetStream = new NatsJSContext(data);
        KeyValue = new NatsKVContext(new NatsJSContext(control));
    }

    public NatsJSContext JetStream { get; }

    public NatsKVContext KeyValue { get; }

    /// <exception cref="BrokerError">IoError when no server answered within <paramref name="timeout"/>.</exception>
    public static NatsLink Connect(string url, TimeSpan timeout)
    {
        var data = Open(url, timeout, "data");
        try
        {
            return new NatsLink(data, Open(url, timeout, "control"));
        }
        catch (BrokerError)
        {
            data.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
    }

    private static NatsConnection Open(string url, TimeSpan timeout, string role)
    {
        var conn = new NatsConnection(new NatsOpts
        {
            Url = url,
            Name = $"sharedstore-broker {Environment.ProcessId} {role}",
            ConnectTimeout = timeout,
            RequestTimeout = timeout,
            CommandTimeout = timeout,
            MaxReconnectRetry = -1,
            // Block messages are up to a block (1 MiB by default) plus headers: the server's max_payload must allow
            // it (docs/OPERATIONS.md: max_payload: 8MB); a larger block than the server takes fails its publish.
        });
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            conn.ConnectAsync().AsTask().WaitAsync(cts.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is NatsException or OperationCanceledException or TimeoutException)
        {
            conn.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw new BrokerError(ErrorCode.IoError, $"replication: cannot connect to NATS at '{url}': {e.Message}");
        }

        return conn;
    }

    /// <summary>The stream of block messages: created when missing (per-subject retention of one message: the newest
    /// of each block), else used as it is. Checked once per link.</summary>
    public async Task EnsureStreamAsync(string stream, int replicas, CancellationToken token)
    {
        await _setup.WaitAsync(token).ConfigureAwait(false);
        try
        {
            if (_streams.Contains(stream))
            {
                return;
            }

            try
            {
                var info = await JetStream.GetStreamAsync(stream, cancellationToken: token).ConfigureAwait(false);
                if (info.Info.Config.MaxMsgsPerSubject != 1)
                {
                    throw new BrokerError(ErrorCode.InvalidArgument, $"replication: stream '{stream}' exists with max_msgs_per_subject {info.Info.Config.MaxMsgsPerSubject}, not 1");
                }
            }
            catch (NatsJSApiException e) when (e.Error.Code == 404)
            {
                var config = new StreamConfig(stream, [ReplicationNames.StreamSubjects(stream)])
                {
                    MaxMsgsPerSubject = 1,
                    NumReplicas = Math.Max(1, replicas),
                    Storage = StreamConfigStorage.File,
                    Retention = StreamConfigRetention.Limits,
                    Discard = StreamConfigDiscard.Old,
                };
                await JetStream.CreateStreamAsync(config, token).ConfigureAwait(false);
            }

            _streams.Add(stream);
        }
        finally
        {
            _setup.Release();
        }
    }

    /// <summary>The catalog bucket, created when missing (history 1: the newest value of each key).</summary>
    public async Task<INatsKVStore> BucketAsync(string bucket, int replicas, CancellationToken token)
    {
        await _setup.WaitAsync(token).ConfigureAwait(false);
        try
        {
            if (_buckets.TryGetValue(bucket, out var kv))
            {
                return kv;
            }

            try
            {
                kv = await KeyValue.GetStoreAsync(bucket, token).ConfigureAwait(false);
            }
            catch (NatsJSApiException e) when (e.Error.Code == 404)
            {
                kv = await KeyValue.CreateStoreAsync(new NatsKVConfig(bucket)
                {
                    History = 1,
                    NumberOfReplicas = Math.Max(1, replicas),
                    Storage = NatsKVStorageType.File,
                }, token).ConfigureAwait(false);
            }

            _buckets[bucket] = kv;
            return kv;
        }
        finally
        {
            _setup.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _data.DisposeAsync().ConfigureAwait(false);
        await _control.DisposeAsync().ConfigureAwait(false);
        _setup.Dispose();
    }
}
