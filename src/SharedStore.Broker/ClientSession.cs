using System.Collections.Concurrent;
using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// One connected client process. A dedicated thread reads its requests; calls that may block in the broker
/// (destroy) run on the thread pool so that the same client can still leave, join or cancel meanwhile. When the
/// socket reads EOF the process has exited or was killed (the kernel closes a dead process's descriptors at
/// once), and <see cref="BrokerState.SessionClosed"/> releases everything it held.
/// </summary>
internal sealed partial class ClientSession
{
    private readonly SeqPacketSocket _socket;
    private static readonly ConcurrentDictionary<Request.BodyOneofCase, string> s_kinds = new();
    private readonly BrokerState _state;
    private readonly BrokerServer _server;
    private readonly ConcurrentDictionary<ulong, CancellationTokenSource> _blocking = new();
    private bool _helloDone;
    private readonly LockCheckBucket _lockChecks = new(); // session thread only

    public ClientSession(SeqPacketSocket socket, PeerCredentials credentials, BrokerServer server)
    {
        _socket = socket;
        _server = server;
        _state = server.State;
        Credentials = credentials;
        ApplySendBufferTestHook(socket);
    }

    public PeerCredentials Credentials { get; }

    /// <summary>This client's asynchronous channel and its applier thread, once opened.</summary>
    public AsyncApplier? Applier { get; private set; }

    /// <summary>Broker shutdown: let the applier apply what was published (up to a second), then stop it.</summary>
    public void StopAsyncPath()
    {
        lock (_applierGate)
        {
            Applier?.StopForShutdown(TimeSpan.FromSeconds(1));
        }
    }

    private readonly Lock _applierGate = new();
    private long _channelCharge; // bytes of the channel charged to this client's uid, under _applierGate

    public void Run()
    {
        byte[] buffer = new byte[ProtocolConstants.MaxMessageBytes];
        var fds = new List<SafeFd>();
        try
        {
            while (true)
            {
                int n = _socket.Receive(buffer, fds);
                foreach (var fd in fds)
                {
                    fd.Dispose(); // clients never send descriptors; drop any so none leaks
                }

                fds.Clear();
                if (n <= 0)
                {
                    break;
                }

                Request req;
                try
                {
                    req = Request.Parser.ParseFrom(buffer, 0, n);
                }
                catch (InvalidProtocolBufferException)
                {
                    break; // not our protocol: drop the connection
                }

                // Names are exact (ARCHITECTURE §6): a string that is not UTF-8 or an enum number the schema does not
                // name is refused before anything uses it; a refused hello closes, as every refused hello does.
                if (StrictWire.Check(buffer, n, Request.Descriptor) is { } problem)
                {
                    Reply(new Response { Id = req.Id, Error = Protocol.ErrorCode.InvalidArgument, Message = problem });
                    if (_helloDone)
                    {
                        continue;
                    }

                    break;
                }

                if (!Handle(req))
                {
                    break;
                }
            }
        }
        finally
        {
            foreach (var cts in _blocking.Values)
            {
                TryCancel(cts);
            }

            if (Applier is { } applier)
            {
                // The client is gone. Its lock holds go first (a pending write may wait for a block it held), then
                // everything it published is applied (an accepted write completes after its submitter died), then
                // its memberships are released.
                if (!_server.Stopping)
                {
                    _state.ScrubSession(this);
                    applier.DrainAndStop();
                }

                lock (_applierGate)
                {
                    applier.Dispose();
                    _state.Memory.Release(Credentials.Uid, _channelCharge);
                    _channelCharge = 0;
                }
            }

            CloseNameJoins(); // no join for a name wait after this: the close below releases every membership
            _state.Names.SessionClosed(this);
            _state.SessionClosed(this);
            _socket.Dispose();
        }
    }

    public void Shutdown() => _socket.Shutdown();

    private bool Handle(Request req)
    {
        if (!_helloDone)
        {
            if (req.BodyCase != Request.BodyOneofCase.Hello)
            {
                Reply(new Response { Id = req.Id, Error = Protocol.ErrorCode.InvalidArgument, Message = "the first message must be hello" });
                return false;
            }

            if (req.Hello.ProtocolVersion != ProtocolConstants.ProtocolVersion)
            {
                Reply(new Response
                {
                    Id = req.Id,
                    Error = Protocol.ErrorCode.VersionMismatch,
                    Message = $"broker speaks protocol version {ProtocolConstants.ProtocolVersion}, client sent {req.Hello.ProtocolVersion}",
                    Hello = new HelloReply { ProtocolVersion = ProtocolConstants.ProtocolVersion },
                });
                return false;
            }

            _helloDone = true;
            _socket.SetReceiveTimeout(TimeSpan.Zero); // said hello in time: from now on it may be idle for ever
            Reply(new Response
            {
                Id = req.Id,
                Hello = new HelloReply
                {
                    ProtocolVersion = ProtocolConstants.ProtocolVersion,
                    BrokerPid = _state.Identity.Pid,
                    BrokerStartTicks = (ulong)_state.Identity.StartTicks,
                },
            });
            return true;
        }

        _server.Metrics?.Operation(Kind(req.BodyCase));
        if (req.BodyCase is Request.BodyOneofCase.ObjectLeave or Request.BodyOneofCase.ContainerLeave
                or Request.BodyOneofCase.ObjectDestroy or Request.BodyOneofCase.ContainerDestroy
            && Applier is not null && !Applier.Quiesce(TimeSpan.FromSeconds(30)))
        {
            // The applier must be done with this client's messages (and drop its object views) before a leave
            // or destroy may free what they point at.
            Reply(new Response { Id = req.Id, Error = Protocol.ErrorCode.Timeout, Message = "asynchronous writes of this client still wait for block locks" });
            return true;
        }

        switch (req.BodyCase)
        {
            case Request.BodyOneofCase.ObjectDestroy when DestroyObjectNow(req):
                return true; // answered: no other member used it
            case Request.BodyOneofCase.ContainerDestroy:
            case Request.BodyOneofCase.ObjectDestroy:
            case Request.BodyOneofCase.Flush:
                RunBlocking(req);
                return true;
            case Request.BodyOneofCase.Cancel:
                if (_blocking.TryGetValue(req.Cancel.RequestId, out var cts))
                {
                    TryCancel(cts);
                }
                else
                {
                    _state.Names.Cancel(this, req.Cancel.RequestId);
                }

                return true;
            case Request.BodyOneofCase.NameWait:
                WaitForName(req); // answered now or pushed later (ClientSession.Names.cs)
                return true;
            default:
                Reply(Execute(req, CancellationToken.None));
                return true;
        }
    }

    // The blocking call may finish and dispose its source between our lookup and the Cancel: that race is benign
    // (there is nothing left to cancel) and must not throw on the session thread.
    private static void TryCancel(CancellationTokenSource cts)
    {
        try
        {
            cts.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>object_destroy on the session thread when it need not wait (<see cref="ContainerRegistry.TryDestroyObjectNow"/>):
    /// answered here, true; else false, nothing changed, and the caller runs it on the pool.</summary>
    private bool DestroyObjectNow(Request req)
    {
        var resp = new Response { Id = req.Id };
        try
        {
            if (!_state.TryDestroyObjectNow(this, req.ObjectDestroy))
            {
                return false;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            ErrorReplies.Fill(resp, e, Kind(req.BodyCase), _server.Logger);
        }

        Reply((resp, null));
        return true;
    }

    private void RunBlocking(Request req)
    {
        var cts = new CancellationTokenSource();
        // A request id names one waiting call: a duplicate must not replace (and later remove) the first call's
        // entry, which would leave that call impossible to cancel, even by the session's close.
        if (!_blocking.TryAdd(req.Id, cts))
        {
            cts.Dispose();
            Reply(new Response { Id = req.Id, Error = Protocol.ErrorCode.InvalidArgument, Message = $"request id {req.Id} is already in use by a waiting call" });
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            try
            {
                Reply(Execute(req, cts.Token));
            }
            finally
            {
                _blocking.TryRemove(new KeyValuePair<ulong, CancellationTokenSource>(req.Id, cts));
                cts.Dispose();
            }
        }, null);
    }

    private (Response Response, SegmentGrant? Grant) Execute(Request req, CancellationToken token)
    {
        var resp = new Response { Id = req.Id };
        SegmentGrant? grant = null;
        TimeSpan timeout = req.TimeoutMs == uint.MaxValue ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(req.TimeoutMs);
        try
        {
            switch (req.BodyCase)
            {
                case Request.BodyOneofCase.ContainerCreate:
                    resp.Container = _state.CreateContainer(this, req.ContainerCreate).Info;
                    _state.Names.Created(0, req.ContainerCreate.Name); // push to waiters (NameWaiters)
                    break;
                case Request.BodyOneofCase.ContainerJoin:
                    resp.Container = _state.JoinContainer(this, req.ContainerJoin).Info;
                    break;
                case Request.BodyOneofCase.ContainerLeave:
                    _state.LeaveContainer(this, req.ContainerLeave.ContainerId);
                    break;
                case Request.BodyOneofCase.ContainerDestroy:
                    _state.DestroyContainer(this, req.ContainerDestroy.ContainerId, timeout, token);
                    break;
                case Request.BodyOneofCase.ObjectCreate:
                {
                    (resp.Object, grant) = _state.CreateObject(this, req.ObjectCreate);
                    _state.Names.Created(req.ObjectCreate.ContainerId, req.ObjectCreate.Name); // push to waiters
                    resp.Segments.AddRange(grant.Segments);
                    break;
                }

                case Request.BodyOneofCase.ObjectJoin:
                {
                    (resp.Object, grant) = _state.JoinObject(this, req.ObjectJoin);
                    resp.Segments.AddRange(grant.Segments);
                    break;
                }

                case Request.BodyOneofCase.SegmentFetch:
                {
                    grant = _state.FetchSegment(this, req.SegmentFetch);
                    resp.Segments.AddRange(grant.Segments);
                    break;
                }

                case Request.BodyOneofCase.ObjectLeave:
                    _state.LeaveObject(this, req.ObjectLeave);
                    break;
                case Request.BodyOneofCase.ObjectDestroy:
                    _state.DestroyObject(this, req.ObjectDestroy, timeout, token);
                    break;
                case Request.BodyOneofCase.List:
                    resp.List = _state.List();
                    break;
                case Request.BodyOneofCase.Holders:
                    resp.Holders = _state.Holders(this, req.Holders);
                    break;
                case Request.BodyOneofCase.Status:
                    resp.Status = _server.Status();
                    break;
                case Request.BodyOneofCase.Flush:
                    _state.Flush(this, req.Flush.ContainerId, timeout, token);
                    break;
                case Request.BodyOneofCase.AsyncOpen:
                    (resp.AsyncChannel, grant) = OpenAsync(req.AsyncOpen);
                    break;
                case Request.BodyOneofCase.LockCheck:
                    if (!_lockChecks.TryTake())
                    {
                        // The wire's BUSY (the library never surfaces this answer: its lock_check is fire-and-forget).
                        resp.Error = Protocol.ErrorCode.Busy;
                        resp.Message = $"more than {LockCheckBucket.PerSecond} lock checks a second from this connection";
                        break;
                    }

                    resp.LockCheck = _state.CheckLock(this, req.LockCheck);
                    break;
                default:
                    resp.Error = Protocol.ErrorCode.InvalidArgument;
                    resp.Message = $"unknown request {req.BodyCase}";
                    break;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            ErrorReplies.Fill(resp, e, Kind(req.BodyCase), _server.Logger);
        }

        return (resp, grant);
    }

    private (AsyncChannelInfo Info, SegmentGrant Grant) OpenAsync(AsyncOpen req)
    {
        if (Applier is not null)
        {
            throw new BrokerError(ErrorCode.AlreadyExists, "this client's asynchronous channel is already open");
        }

        int slots = req.SlotCount == 0 ? Queues.ChannelDescriptor.DefaultSlotCount : (int)Math.Min(req.SlotCount, int.MaxValue);
        if (slots < 64 || slots > (1 << 20) || (slots & (slots - 1)) != 0)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"ring slots must be a power of two from 64 to 1 Mi, not {req.SlotCount}");
        }

        long staging = req.StagingBytes == 0 ? Queues.ChannelDescriptor.DefaultStagingSize : (long)Math.Min(req.StagingBytes, long.MaxValue);
        if (staging < (1L << 20) || staging > (1L << 30))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"staging must be from 1 MiB to 1 GiB, not {req.StagingBytes}");
        }

        staging = (staging + 4095) & ~4095L;
        // A channel is shared memory like any object: a connection that is a member of no container gets none (it
        // could only hold memory hostage: every asynchronous operation names a joined object), and a member's channel
        // is charged to its uid against the memory limit and the per-uid quota, before it is made.
        if (!_state.IsMember(this))
        {
            throw new BrokerError(ErrorCode.NoResources, "an asynchronous channel is for a member of a container: join or create one first");
        }

        long length = Queues.ChannelDescriptor.LengthFor(slots, Queues.ChannelDescriptor.DefaultSlotSize, staging);
        _state.Memory.Charge(Credentials.Uid, length, "asynchronous channel");
        AsyncApplier applier;
        try
        {
            lock (_applierGate)
            {
                if (_server.Stopping)
                {
                    throw new BrokerError(ErrorCode.BrokerUnavailable, "the broker is stopping");
                }

                applier = new AsyncApplier(this, _state, _server.ApplyScheduler, slots, staging, _state.Identity.Pid, _server.Metrics);
                Applier = applier;
                _channelCharge = length;
            }
        }
        catch
        {
            _state.Memory.Release(Credentials.Uid, length);
            throw;
        }

        var grant = new SegmentGrant();
        grant.AddRef(applier.Fd);
        return (new AsyncChannelInfo
        {
            Length = (ulong)applier.Length,
            SlotCount = (uint)applier.SlotCount,
            SlotSize = Queues.ChannelDescriptor.DefaultSlotSize,
            StagingBytes = (ulong)applier.StagingSize,
        }, grant);
    }

    private void Reply(Response resp) => Reply((resp, null));

    // Segment descriptors ride on the reply that first needs them (see SegmentGrant); their references are dropped
    // once the reply is sent (or the send failed). A reply of any size goes out, in parts if need be (ResponseFraming).
    private void Reply((Response Response, SegmentGrant? Grant) r)
    {
        int length, errno;
        try
        {
            if (ResponseFraming.TrySend(_socket, r.Response, r.Grant?.Fds ?? [], out length, out errno))
            {
                return;
            }
        }
        finally
        {
            r.Grant?.Release();
        }

        ReplyFailed(r.Response, length, errno);
    }

    /// <summary>
    /// A reply the kernel refused is never dropped in silence (issue 13, finding 4). It is logged, and the client is
    /// told: a reply to a request that changed nothing (an error already, or list, holders, status) becomes an error
    /// reply of the same id; a reply to a request that took effect (a create, a join that granted descriptors…) closes
    /// the connection instead, so the client sees BrokerUnavailable and the session's close releases the memberships
    /// and joins the request made (a container or object it created stays, as after any client's exit) — an error
    /// reply there would tell the client that something failed which had in fact happened. A client that is gone, or
    /// that did not read within <see cref="BrokerOptions.SendTimeout"/> (EAGAIN), is dropped: an error reply would
    /// find it no more able to read.
    /// </summary>
    private void ReplyFailed(Response failed, int length, int errno)
    {
        string body = failed.BodyCase.ToString();
        if (errno is Interop.Libc.EPIPE or Interop.Libc.ECONNRESET or Interop.Libc.ENOTCONN or Interop.Libc.EBADF)
        {
            // The client is gone (or its connection was shut down): its socket reads EOF next and the session ends.
            Log.ReplyUndeliverable(_server.Logger, failed.Id, body, Credentials.Pid, Interop.Libc.StrError(errno));
            _socket.Shutdown();
            return;
        }

        if (errno == Interop.Libc.EAGAIN)
        {
            Log.ReplyFailed(_server.Logger, failed.Id, body, length, Credentials.Pid, Interop.Libc.StrError(errno),
                "the client did not read its replies within the send timeout: closing the connection, which releases what it held");
            _socket.Shutdown();
            return;
        }

        bool changedNothing = failed.Error != Protocol.ErrorCode.Ok
            || failed.BodyCase is Response.BodyOneofCase.List or Response.BodyOneofCase.Holders or Response.BodyOneofCase.Status;
        if (changedNothing)
        {
            var error = new Response
            {
                Id = failed.Id,
                Error = errno is Interop.Libc.EMSGSIZE or Interop.Libc.ENOBUFS or Interop.Libc.ENOMEM ? Protocol.ErrorCode.NoResources : Protocol.ErrorCode.Internal,
                Message = $"the broker could not send its reply ({length} bytes): {Interop.Libc.StrError(errno)}",
            };
            // Logged before the error goes out: once the client has its answer, the log already says why.
            Log.ReplyFailed(_server.Logger, failed.Id, body, length, Credentials.Pid, Interop.Libc.StrError(errno), $"answering {error.Error} instead");
            if (ResponseFraming.TrySend(_socket, error, [], out int errorLength, out int again))
            {
                return;
            }

            Log.ReplyFailed(_server.Logger, failed.Id, "error reply", errorLength, Credentials.Pid, Interop.Libc.StrError(again), "closing the connection");
        }
        else
        {
            Log.ReplyFailed(_server.Logger, failed.Id, body, length, Credentials.Pid, Interop.Libc.StrError(errno),
                "the request took effect: closing the connection, which releases its memberships and joins");
        }

        _socket.Shutdown(); // the receive loop reads EOF and the session ends; the client sees BrokerUnavailable
    }

    /// <summary>The request kind as the wire schema names it (container_create, list…): the metrics' kind tag.</summary>
    private static string Kind(Request.BodyOneofCase c) =>
        s_kinds.GetOrAdd(c, static c => Request.Descriptor.FindFieldByNumber((int)c)?.Name ?? "unknown");
}

/// <summary>
/// The rate limit of one connection's <c>lock_check</c> requests: a token bucket of <see cref="PerSecond"/> tokens
/// refilled at that rate. A waiter asks once per 250 ms of waiting, so 100 a second covers 25 threads waiting on
/// distinct blocks at once; what it stops is a member looping on lock_check to keep the broker's state lock busy
/// (each check holds it for about a microsecond). Used by the session thread only.
/// </summary>
internal sealed class LockCheckBucket
{
    public const int PerSecond = 100;
    private double _tokens = PerSecond;
    private long _last = System.Diagnostics.Stopwatch.GetTimestamp();

    public bool TryTake()
    {
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        _tokens = Math.Min(PerSecond, _tokens + ((now - _last) * (double)PerSecond / System.Diagnostics.Stopwatch.Frequency));
        _last = now;
        if (_tokens < 1)
        {
            return false;
        }

        _tokens--;
        return true;
    }
}
