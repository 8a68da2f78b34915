using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using SharedStore.Async;
using SharedStore.Locks;
using SharedStore.Protocol;

namespace SharedStore;

/// <summary>
/// One connection of a client to one broker instance: the socket, its receive thread, the calls waiting for an
/// answer, and everything that belongs to that broker instance — the lock-wait policy whose <c>BrokerLost</c> flag
/// every lock waiter of this connection watches, and the asynchronous channel. When the broker goes (EOF on the
/// socket), the connection is lost for good: its handles (containers, objects, operations) fail with
/// <see cref="ErrorCode.BrokerUnavailable"/> from then on, while memory they mapped stays mapped (leases stay readable).
/// A <see cref="SharedStoreClient"/> replaces a lost connection with a new one on its next call (docs/ARCHITECTURE.md
/// §5, "Broker death and restart").
/// </summary>
internal sealed class BrokerConnection : IDisposable
{
    private readonly SeqPacketSocket _socket;
    private readonly ConcurrentDictionary<ulong, PendingCall> _pending = new();
    private long _directAsyncWrites;
    private readonly Thread _receiver;
    private readonly SharedStoreClientOptions _options;
    private readonly Lock _asyncGate = new();
    private AsyncChannel? _channel;
    private long _nextId;
    private volatile bool _disposed;

    private BrokerConnection(SeqPacketSocket socket, string socketPath, SharedStoreClientOptions options, int generation)
    {
        _socket = socket;
        _options = options;
        SocketPath = socketPath;
        Generation = generation;
        WaitPolicy = new LockWaitPolicy
        {
            SpinTicks = (long)(options.LockSpin.TotalSeconds * Stopwatch.Frequency),
            SleepSliceNs = options.TestSleepSlice is { } slice ? (long)slice.TotalNanoseconds : LockWaitPolicy.MaxSleepSliceNs,
        };
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = "sharedstore-receive" };
        _receiver.Start();
    }

    /// <summary>1 for a client's first connection, then one more for each reconnection.</summary>
    public int Generation { get; }

    public string SocketPath { get; }

    /// <summary>The broker's process id, from its hello.</summary>
    public int BrokerPid { get; private set; }

    /// <summary>The broker's start timestamp, from its hello: with <see cref="BrokerPid"/>, names the broker instance
    /// whose lock tables this client may trust.</summary>
    public long BrokerStart { get; private set; }

    /// <summary>The lock-wait policy of every lock waiter on memory granted by this connection.</summary>
    public LockWaitPolicy WaitPolicy { get; }

    /// <summary>True once the broker is gone (or the connection was closed): for good.</summary>
    public bool Lost => WaitPolicy.BrokerLost;

    public SharedStoreClientOptions Options => _options;

    /// <summary>Connects to the broker at <paramref name="path"/> (starting one first when the options say so) and
    /// says hello.</summary>
    /// <exception cref="SharedStoreException">BrokerUnavailable (when this call started a broker that failed, with the
    /// broker's exit code and last words); VersionMismatch.</exception>
    public static BrokerConnection Open(string path, SharedStoreClientOptions options, int generation)
    {
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

        var c = new BrokerConnection(socket, path, options, generation);
        try
        {
            var reply = c.Call(new Request { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion, ClientName = options.ClientName } }, options.RequestTimeout, default);
            c.BrokerPid = reply.Response.Hello.BrokerPid;
            c.BrokerStart = (long)reply.Response.Hello.BrokerStartTicks;
            return c;
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    // ---- The asynchronous channel of this broker instance -------------------------------------------------

    /// <summary>This connection's asynchronous channel, opened on first use.</summary>
    /// <exception cref="SharedStoreException">BrokerUnavailable when the connection is lost.</exception>
    public AsyncChannel Channel
    {
        get
        {
            if (Volatile.Read(ref _channel) is { } c)
            {
                return c;
            }

            lock (_asyncGate)
            {
                ObjectDisposedException.ThrowIf(_disposed && !Lost, this);
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

                    var channel = new AsyncChannel(fds[0], (long)resp.AsyncChannel.Length, WaitPolicy);
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
    }

    /// <summary>Waits until every asynchronous operation submitted on this connection so far is terminal; false on
    /// timeout. True at once when no channel was opened, or the broker is gone (its operations read Failed).</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public bool WaitForAsyncOperations(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        Volatile.Read(ref _channel)?.Drain(timeout, cancellationToken) ?? true;

    /// <summary>
    /// A call that ends a use of memory or of what was written to it (flush, leave, destroy): first waits for this
    /// process's pending asynchronous operations, so its own writes land (and reach the flush) before the call, then
    /// makes the call with what is left of <paramref name="timeout"/>. One budget for both: the broker gets the rest,
    /// not the whole timeout again. A drain that timed out fails with Timeout before anything is asked of the broker,
    /// so the call changed nothing.
    /// </summary>
    /// <exception cref="SharedStoreException">Timeout (the drain, or the call); what the call throws.</exception>
    /// <exception cref="OperationCanceledException">The token fired (while draining: nothing was asked).</exception>
    public (Response Response, List<SafeFd> Fds) CallAfterAsyncOperations(Request request, TimeSpan timeout, CancellationToken cancellationToken, bool brokerWaits = false)
    {
        ValidateTimeout(timeout);
        var deadline = Deadline.After(timeout);
        if (!WaitForAsyncOperations(timeout, cancellationToken))
        {
            ThrowHelper.Timeout($"{request.BodyCase} (this process's asynchronous operations were still in progress)");
        }

        return Call(request, deadline.Remaining, cancellationToken, brokerWaits);
    }

    /// <summary>How submissions wait for ring or staging space, as the options say now.</summary>
    public SpaceWait SubmitWait => new(_options.AsyncFullMode == AsyncFullMode.Fail, _options.AsyncSubmitTimeout);

    /// <summary>A synchronous write keeps program order with this process's earlier asynchronous ones: it first waits
    /// for those still pending (nothing to do, one load, when there are none).</summary>
    public void OrderAfterAsyncWrites(TimeSpan timeout)
    {
        if (Volatile.Read(ref _channel) is { HasPending: true } c && !c.Drain(timeout))
        {
            ThrowHelper.Timeout("write (waiting for this process's earlier asynchronous writes)");
        }
    }

    /// <summary>Whether every asynchronous operation this process submitted through the ring so far is terminal, by
    /// the channel's CompletedThrough, spinning for at most <paramref name="budgetTicks"/> (never sleeping) while some
    /// are not. Exact for the calling thread's own earlier submissions and for any that happen before this call. True
    /// when the channel is not open yet (nothing was ever submitted) or is gone. The direct path of an awrite is taken
    /// only when this is true (<c>SharedObject.TryWriteDirect</c> has the ordering argument).</summary>
    public bool AsyncOperationsSettled(long budgetTicks) => Volatile.Read(ref _channel) is not { } c || c.SettleWithin(budgetTicks);

    /// <summary>Asynchronous writes this connection's callers applied themselves (the direct path).</summary>
    public long DirectAsyncWrites => Interlocked.Read(ref _directAsyncWrites);

    public void CountDirectAsyncWrite() => Interlocked.Increment(ref _directAsyncWrites);

    // ---- Calls --------------------------------------------------------------------------------------------

    /// <summary>Asks the broker to check one block's lock record (a lock wait on it has lasted
    /// <see cref="LockWaitPolicy.RepairAfterTicks"/>). Sent without waiting for the answer: the broker wakes the
    /// record's sleepers if it clears anything, and the waiter looks again anyway. Never throws: a lost broker is the
    /// wait's own BrokerLost.</summary>
    public void RequestLockCheck(uint containerId, uint objectId, long block)
    {
        if (_disposed || Lost)
        {
            return;
        }

        var request = new Request
        {
            Id = (ulong)Interlocked.Increment(ref _nextId), // no pending call: the receiver drops the answer
            LockCheck = new LockCheck { ContainerId = containerId, ObjectId = objectId, Block = (ulong)block },
        };
        try
        {
            _socket.Send(request.ToByteArray());
        }
        catch (ObjectDisposedException)
        {
            // disposed meanwhile: the waiter sees BrokerLost
        }
    }

    /// <summary>One round trip. Errors come back as <see cref="SharedStoreException"/>; descriptors the broker
    /// attached are returned to the caller, who owns them.</summary>
    public (Response Response, List<SafeFd> Fds) Call(Request request, TimeSpan timeout, CancellationToken cancellationToken, bool brokerWaits = false)
    {
        ValidateTimeout(timeout);
        if (Lost)
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
            if (Lost)
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
            // ManualResetEventSlim's own wait (a short spin, then a monitor) rather than WaitHandle.WaitAny over its
            // WaitHandle, which made a kernel event object for every call (issue 16: a create is one round trip).
            bool signaled, canceled = false;
            try
            {
                signaled = call.Done.Wait(wait, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                signaled = call.Done.IsSet;
                canceled = !signaled;
            }

            if (canceled)
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
            else if (!signaled)
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

                throw new SharedStoreException(WireErrors.FromWire(resp.Error), resp.Message);
            }

            return (resp, call.Fds);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            // Refuse before sending: a request that took effect must not be reported as an invalid call.
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "a timeout is zero or more, or Timeout.InfiniteTimeSpan");
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

    /// <summary>Closes the connection: lost from now on. The broker releases every membership, lock and use of it when
    /// the socket closes. The channel is unmapped.</summary>
    public void Dispose() => Close(retire: false);

    /// <summary>Closes a connection whose broker was lost, when the client connects again: like <see cref="Dispose"/>,
    /// but its channel stays mapped (retired) so operations submitted on it keep reporting what they reached; the
    /// client disposes it with itself.</summary>
    public void Retire() => Close(retire: true);

    private void Close(bool retire)
    {
        if (!_disposed)
        {
            _disposed = true;
            WaitPolicy.BrokerLost = true;
            _socket.Shutdown();
            if (Thread.CurrentThread != _receiver)
            {
                _receiver.Join(TimeSpan.FromSeconds(5));
            }

            _socket.Dispose();
        }

        lock (_asyncGate)
        {
            if (retire)
            {
                _channel?.Retire();
            }
            else
            {
                _channel?.Dispose();
            }
        }
    }

    private sealed class PendingCall
    {
        public readonly ManualResetEventSlim Done = new();
        public Response? Response;
        public List<SafeFd> Fds = [];
    }
}
