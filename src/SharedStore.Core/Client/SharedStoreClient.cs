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
/// <remarks>When the broker dies, every call that needs it fails with <see cref="ErrorCode.BrokerUnavailable"/> at
/// once (the socket reads EOF), threads blocked in lock waits fail within 50 ms, and memory already mapped stays
/// readable. A restarted broker starts clean: connect again with a new client.</remarks>
public sealed class SharedStoreClient : IDisposable
{
    private readonly SeqPacketSocket _socket;
    private readonly ConcurrentDictionary<ulong, PendingCall> _pending = new();
    private readonly Thread _receiver;
    private readonly SharedStoreClientOptions _options;
    private readonly List<Container> _containers = [];
    private long _nextId;
    private volatile bool _disposed;

    private SharedStoreClient(SeqPacketSocket socket, SharedStoreClientOptions options)
    {
        _socket = socket;
        _options = options;
        WaitPolicy = new LockWaitPolicy { SpinTicks = (long)(options.LockSpin.TotalSeconds * Stopwatch.Frequency) };
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = "sharedstore-receive" };
        _receiver.Start();
    }

    /// <summary>The calling process's primary Unix group id: a group it may create containers for.</summary>
    public static long ProcessGroupId => Interop.Libc.getgid();

    /// <summary>The broker's process id, from its hello.</summary>
    public int BrokerPid { get; private set; }

    /// <summary>The socket this client is connected to.</summary>
    public string SocketPath { get; private set; } = "";

    /// <summary>True once the broker connection is gone (the broker died or stopped).</summary>
    public bool IsBrokerLost => WaitPolicy.BrokerLost;

    internal LockWaitPolicy WaitPolicy { get; }

    private readonly Lock _asyncGate = new();
    private AsyncChannel? _channel;
    private Devices.IDeviceAccessScheduler? _scheduler;

    /// <summary>This client's asynchronous channel, opened on first use.</summary>
    internal AsyncChannel Channel => Volatile.Read(ref _channel) ?? OpenChannel();

    /// <summary>This process's device scheduler for client-side asynchronous reads, created on first use.</summary>
    internal Devices.IDeviceAccessScheduler DeviceScheduler
    {
        get
        {
            if (Volatile.Read(ref _scheduler) is { } s)
            {
                return s;
            }

            lock (_asyncGate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return _scheduler ??= Devices.DeviceSchedulers.Create(Devices.DeviceSchedulerKind.Auto, Devices.DeviceMode.None);
            }
        }
    }

    /// <summary>Rents <paramref name="length"/> bytes of shared memory for a zero-copy
    /// <see cref="SharedObject.AWrite(long, SharedBuffer, int)"/>. Waits while the staging area is full.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero, negative, or more than a quarter of the staging area.</exception>
    public SharedBuffer RentBuffer(int length) => Channel.Rent(length);

    /// <summary>Slots of this client's submission ring (opens the channel).</summary>
    public int AsyncRingSlots => Channel.SlotCount;

    /// <summary>Waits until every asynchronous operation this client submitted so far has finished; false on timeout.</summary>
    public bool WaitForAsyncOperations(TimeSpan timeout) => Volatile.Read(ref _channel)?.Drain(timeout) ?? true;

    /// <summary>A synchronous write keeps program order with this process's earlier asynchronous ones: it first
    /// waits for those still pending (nothing to do, one load, when there are none).</summary>
    internal void OrderAfterAsyncWrites(TimeSpan timeout)
    {
        if (Volatile.Read(ref _channel) is { HasPending: true } c && !c.Drain(timeout))
        {
            ThrowHelper.Timeout("write (waiting for this process's earlier asynchronous writes)");
        }
    }

    private AsyncChannel OpenChannel()
    {
        lock (_asyncGate)
        {
            if (_channel is { } existing)
            {
                return existing;
            }

            var (resp, fds) = Call(new Request
            {
                AsyncOpen = new AsyncOpen { SlotCount = (uint)_options.AsyncRingSlots, StagingBytes = (ulong)_options.AsyncStagingBytes },
            }, _options.RequestTimeout, default);
            try
            {
                if (fds.Count != 1 || resp.AsyncChannel is null)
                {
                    throw new SharedStoreException(ErrorCode.Internal, $"async_open answered with {fds.Count} descriptors");
                }

                var channel = new AsyncChannel(this, fds[0], (long)resp.AsyncChannel.Length);
                Volatile.Write(ref _channel, channel);
                return channel;
            }
            finally
            {
                foreach (var fd in fds)
                {
                    fd.Dispose(); // the mapping keeps the memory
                }
            }
        }
    }

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
        var socket = SeqPacketSocket.TryConnect(path, out int errno);
        if (socket is null && options.StartBrokerIfMissing)
        {
            // Returns once the broker accepts, or throws BrokerUnavailable with the broker's own reason.
            BrokerLauncher.Start(path, options, options.StartTimeout);
            socket = SeqPacketSocket.TryConnect(path, out errno);
        }

        if (socket is null)
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, $"no broker at {path}: {Interop.Libc.StrError(errno)}");
        }

        var client = new SharedStoreClient(socket, options) { SocketPath = path };
        try
        {
            var reply = client.Call(new Request { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion, ClientName = options.ClientName } }, options.RequestTimeout, default);
            client.BrokerPid = reply.Response.Hello.BrokerPid;
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>The seed's <c>container_create</c>: creates a container shared with Unix group
    /// <paramref name="groupId"/> and joins it.</summary>
    /// <exception cref="SharedStoreException">AlreadyExists; PermissionDenied (not in the group and not root);
    /// InvalidArgument (name, block size); NoResources (memory); BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null or empty, or it or the durable path is not
    /// valid UTF-16 (a lone surrogate).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The write policy is not a <see cref="WritePolicy"/> value.</exception>
    public Container CreateContainer(string name, long groupId, ContainerOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        options ??= new ContainerOptions();
        WireStrings.ThrowIfNotValidUtf16(options.DurablePath, nameof(options));
        if (!Enum.IsDefined(options.WritePolicy))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.WritePolicy, "the write policy is not a WritePolicy value");
        }

        var r = Call(new Request
        {
            ContainerCreate = new ContainerCreate
            {
                Name = name,
                GroupId = groupId,
                WritePolicy = (Protocol.WritePolicy)options.WritePolicy,
                BlockSize = (uint)options.BlockSize,
                DurablePath = options.DurablePath ?? "",
            },
        }, _options.RequestTimeout, cancellationToken);
        return Track(new Container(this, r.Response.Container));
    }

    /// <summary>The seed's <c>container_join</c>.</summary>
    /// <exception cref="SharedStoreException">NotFound; Destroyed (destroy is in progress); PermissionDenied;
    /// NoResources (63 member processes already); AlreadyExists (this client is already a member); BrokerUnavailable.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null, empty or not valid UTF-16.</exception>
    public Container JoinContainer(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        WireStrings.ThrowIfNotValidUtf16(name);
        var r = Call(new Request { ContainerJoin = new ContainerJoin { Name = name } }, _options.RequestTimeout, cancellationToken);
        return Track(new Container(this, r.Response.Container));
    }

    /// <summary>Joins a container, waiting (polling every <paramref name="pollInterval"/>) until it exists, as the
    /// seed's reader does with <c>while ((con = container_join("con")) &lt; 0);</c>.</summary>
    /// <exception cref="SharedStoreException">Timeout when it did not appear in time; PermissionDenied.</exception>
    public Container JoinContainerWhenCreated(string name, TimeSpan timeout, TimeSpan pollInterval = default, CancellationToken cancellationToken = default)
    {
        if (pollInterval <= TimeSpan.Zero)
        {
            pollInterval = TimeSpan.FromMilliseconds(10);
        }

        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return JoinContainer(name, cancellationToken);
            }
            catch (SharedStoreException e) when (e.Code is ErrorCode.NotFound or ErrorCode.Destroyed)
            {
                if (timeout != Timeout.InfiniteTimeSpan && sw.Elapsed >= timeout)
                {
                    throw new SharedStoreException(ErrorCode.Timeout, $"container '{name}' did not appear within {timeout}", e);
                }

                cancellationToken.WaitHandle.WaitOne(pollInterval);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }

    /// <summary>The broker's table of containers, objects and members (for tools and tests).</summary>
    internal ListReply ListRaw() => Call(new Request { List = new ListRequest() }, _options.RequestTimeout, default).Response.List;

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

        _disposed = true;
        WaitPolicy.BrokerLost = true;
        _socket.Shutdown();
        _receiver.Join(TimeSpan.FromSeconds(5));
        _socket.Dispose();
        lock (_asyncGate)
        {
            _channel?.Dispose();
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

    /// <summary>One round trip. Errors come back as <see cref="SharedStoreException"/>; descriptors the broker
    /// attached are returned to the caller, who owns them.</summary>
    internal (Response Response, List<SafeFd> Fds) Call(Request request, TimeSpan timeout, CancellationToken cancellationToken, bool brokerWaits = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            // Refuse before sending: a request that took effect must not be reported as an invalid call.
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "a timeout is zero or more, or Timeout.InfiniteTimeSpan");
        }

        if (WaitPolicy.BrokerLost)
        {
            ThrowHelper.BrokerLost();
        }

        ulong id = (ulong)Interlocked.Increment(ref _nextId);
        request.Id = id;
        if (brokerWaits)
        {
            request.TimeoutMs = timeout == Timeout.InfiniteTimeSpan ? uint.MaxValue : (uint)Math.Min(uint.MaxValue - 1, (ulong)timeout.TotalMilliseconds);
        }

        var call = new PendingCall();
        _pending[id] = call;
        try
        {
            if (WaitPolicy.BrokerLost)
            {
                ThrowHelper.BrokerLost(); // lost between the check above and our registration: MarkLost missed us
            }

            byte[] frame = request.ToByteArray();
            if (frame.Length > ProtocolConstants.MaxMessageBytes)
            {
                // A durable path of megabytes: the broker would read a truncated datagram and drop the connection.
                // This request's fault, not the connection's, which stays usable.
                throw new SharedStoreException(ErrorCode.InvalidArgument, $"the {request.BodyCase} request is {frame.Length} bytes, more than the {ProtocolConstants.MaxMessageBytes} one message may carry");
            }

            if (!_socket.Send(frame))
            {
                MarkLost();
                ThrowHelper.BrokerLost();
            }

            // The broker enforces a waiting call's own timeout; give its answer a grace period to arrive.
            // WaitAny takes at most int.MaxValue ms (24.8 days); anything longer is as good as infinite.
            TimeSpan grace = brokerWaits ? TimeSpan.FromSeconds(5) : TimeSpan.Zero;
            TimeSpan wait = timeout == Timeout.InfiniteTimeSpan || timeout >= TimeSpan.FromMilliseconds(int.MaxValue) - grace
                ? Timeout.InfiniteTimeSpan
                : timeout + grace;
            int which = WaitHandle.WaitAny([call.Done.WaitHandle, cancellationToken.WaitHandle], wait);
            if (which == 1 && !call.Done.IsSet)
            {
                if (brokerWaits)
                {
                    // Ask the broker to abandon the wait and put things back; its answer says what happened.
                    _socket.Send(new Request { Id = (ulong)Interlocked.Increment(ref _nextId), Cancel = new Cancel { RequestId = id } }.ToByteArray());
                    call.Done.Wait(TimeSpan.FromSeconds(10));
                }

                if (!call.Done.IsSet)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                }
            }
            else if (which == WaitHandle.WaitTimeout)
            {
                ThrowHelper.Timeout($"{request.BodyCase}");
            }

            if (call.Response is null)
            {
                ThrowHelper.BrokerLost();
            }

            var resp = call.Response;
            if (resp.Error != Protocol.ErrorCode.Ok)
            {
                foreach (var fd in call.Fds)
                {
                    fd.Dispose();
                }

                if (resp.Error == Protocol.ErrorCode.Canceled)
                {
                    throw new OperationCanceledException(resp.Message, cancellationToken);
                }

                throw new SharedStoreException((ErrorCode)resp.Error, resp.Message);
            }

            return (resp, call.Fds);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private void ReceiveLoop()
    {
        byte[] buffer = new byte[ProtocolConstants.MaxMessageBytes];
        var fds = new List<SafeFd>();
        var assembler = new ResponseFraming.Assembler(); // replies larger than one datagram come in parts
        while (true)
        {
            int n = _socket.Receive(buffer, fds);
            if (n <= 0)
            {
                break;
            }

            Response datagram;
            try
            {
                datagram = Response.Parser.ParseFrom(buffer, 0, n);
            }
            catch (InvalidProtocolBufferException)
            {
                break;
            }

            var resp = assembler.Add(datagram, fds, out var replyFds);
            fds.Clear();
            if (resp is null)
            {
                continue; // more parts to come
            }

            if (_pending.TryGetValue(resp.Id, out var call))
            {
                call.Response = resp;
                call.Fds = replyFds;
                call.Done.Set();
            }
            else
            {
                foreach (var fd in replyFds)
                {
                    fd.Dispose();
                }
            }
        }

        MarkLost();
    }

    private void MarkLost()
    {
        WaitPolicy.BrokerLost = true;
        foreach (var call in _pending.Values)
        {
            call.Done.Set();
        }
    }

    private sealed class PendingCall
    {
        public readonly ManualResetEventSlim Done = new();
        public Response? Response;
        public List<SafeFd> Fds = [];
    }
}
