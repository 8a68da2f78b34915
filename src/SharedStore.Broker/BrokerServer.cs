using System.Diagnostics;
using System.Runtime.Versioning;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// The broker process's server: guarantees a single broker per socket path, accepts client connections and
/// runs one <see cref="ClientSession"/> thread per client.
/// <para><b>Single instance and stale leftovers.</b> The broker first takes an exclusive <c>flock</c> on
/// <c>SOCKET.lock</c>. The kernel drops that lock when its holder dies, however it dies, so a held lock means a
/// live broker (refuse to start) and a free one means any socket file or pid file there is stale (remove and
/// replace). Two brokers can therefore never serve one path, and leftovers never block a start.</para>
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class BrokerServer : IDisposable
{
    private readonly BrokerOptions _options;
    private readonly List<ClientSession> _sessions = [];
    private readonly ManualResetEventSlim _stopped = new();
    private readonly ConnectionLimiter _connections;
    private SafeFd? _lockFile;
    private SeqPacketSocket? _listener;
    private Thread? _acceptThread;
    private volatile bool _stopping;

    private readonly long _startTimestamp = Stopwatch.GetTimestamp();

    public BrokerServer(BrokerOptions options, ILogger<BrokerServer>? logger = null, BrokerMetrics? metrics = null)
    {
        _options = options;
        _connections = new ConnectionLimiter(options.MaxConnectionsPerUid);
        Logger = logger ?? (ILogger)NullLogger.Instance;
        Metrics = metrics;
        var identity = new BrokerIdentity(Environment.ProcessId, _startTimestamp);
        State = new BrokerState(options, identity, Logger, metrics);
        metrics?.Observe(() => State.Snapshot(SessionCount));
        metrics?.ObserveRingDepth(RingDepth);
        metrics?.ObserveDurable(State.Durable);
        metrics?.ObserveReplication(State.Replication);
        _applyScheduler = new Lazy<SharedStore.Devices.IDeviceAccessScheduler>(
            () => SharedStore.Devices.DeviceSchedulers.Create(options.AsyncScheduler, SharedStore.Devices.DeviceMode.None, threadCount: 1));
    }

    private readonly Lazy<SharedStore.Devices.IDeviceAccessScheduler> _applyScheduler;

    public BrokerState State { get; }

    /// <summary>The device scheduler every session's applier schedules object writes on (created on first use).</summary>
    public SharedStore.Devices.IDeviceAccessScheduler ApplyScheduler => _applyScheduler.Value;

    public bool Stopping => _stopping;

    /// <summary>Messages published in all client rings and not processed yet.</summary>
    private long RingDepth()
    {
        long depth = 0;
        lock (_sessions)
        {
            foreach (var s in _sessions)
            {
                depth += s.Applier?.Depth ?? 0;
            }
        }

        return depth;
    }

    public ILogger Logger { get; }

    public BrokerMetrics? Metrics { get; }

    public int SessionCount
    {
        get
        {
            lock (_sessions)
            {
                return _sessions.Count;
            }
        }
    }

    /// <summary>The answer to a status request: identity, uptime, state figures and every metric's current value.</summary>
    public StatusReply Status()
    {
        var snap = State.Snapshot(SessionCount);
        var reply = new StatusReply
        {
            BrokerPid = Environment.ProcessId,
            UptimeMs = (ulong)Stopwatch.GetElapsedTime(_startTimestamp).TotalMilliseconds,
            SocketPath = _options.SocketPath,
            ContainerCount = (uint)snap.Containers,
            ObjectCount = (uint)snap.Objects,
            ObjectBytes = (ulong)snap.ObjectBytes,
            BytesInUse = (ulong)snap.BytesInUse,
            MemoryLimit = (ulong)_options.MemoryLimit,
            SessionCount = (uint)snap.Sessions,
            NameWaits = (uint)State.Names.Count,
        };
        if (Metrics is not null)
        {
            foreach (var (name, unit, tags, value) in Metrics.Samples())
            {
                reply.Metrics.Add(new MetricSample { Name = name, Unit = unit, Tags = tags, Value = value });
            }
        }

        return reply;
    }

    public string SocketPath => _options.SocketPath;

    /// <summary>Takes the instance lock, binds the socket and starts accepting. Returns false (with a reason) when
    /// another live broker owns the path.</summary>
    public bool Start(out string? refusal)
    {
        refusal = null;

        string lockPath = _options.SocketPath + ".lock";
        int fd = Interop.Libc.open(lockPath, Interop.Libc.O_RDWR | Interop.Libc.O_CREAT | Interop.Libc.O_CLOEXEC, Convert.ToInt32("600", 8));
        if (fd < 0)
        {
            throw Interop.Libc.Error($"open({lockPath})", Interop.Libc.LastErrno);
        }

        _lockFile = new SafeFd(fd);
        if (Interop.Libc.flock(fd, Interop.Libc.LOCK_EX | Interop.Libc.LOCK_NB) != 0)
        {
            string pid = TryRead(_options.SocketPath + ".pid") ?? "?";
            refusal = $"another broker (pid {pid.Trim()}) is serving {_options.SocketPath}";
            _lockFile.Dispose();
            _lockFile = null;
            return false;
        }

        // Durable containers come back before anyone can connect (so a client never sees them half restored).
        State.RestoreDurable();

        // We own the path: whatever socket file is there belongs to a dead broker.
        _ = Interop.Libc.unlink(_options.SocketPath);
        _listener = SeqPacketSocket.Listen(_options.SocketPath, _options.SystemWide ? Convert.ToInt32("666", 8) : Convert.ToInt32("600", 8));
        File.WriteAllText(_options.SocketPath + ".pid", $"{Environment.ProcessId}\n");
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "sharedstore-accept" };
        _acceptThread.Start();
        return true;
    }

    /// <summary>
    /// Accepts connections until the broker stops. One thread per session (a blocking receive loop), bounded: a
    /// connection is counted against its uid's maximum (<see cref="ConnectionLimiter"/>) before any thread or memory is
    /// spent on it, and closed at once past it; a session must say hello within <see cref="BrokerOptions.HelloTimeout"/>
    /// and each reply may wait at most <see cref="BrokerOptions.SendTimeout"/> for a client that does not read; session
    /// threads have a small stack. Nothing a connection does — vanishing before its credentials are read, a thread that
    /// cannot be created, any other failure — ends this loop.
    /// </summary>
    private void AcceptLoop()
    {
        while (!_stopping)
        {
            SeqPacketSocket? conn = null;
            try
            {
                conn = _listener!.Accept();
                if (conn is null)
                {
                    break;
                }

                Admit(conn);
            }
            catch (Exception e)
            {
                conn?.Dispose();
                Log.AcceptFailed(Logger, e.Message);
                Thread.Sleep(10); // a failure that repeats (out of memory, a descriptor limit) must not spin this thread
            }
        }
    }

    private void Admit(SeqPacketSocket conn)
    {
        PeerCredentials who;
        try
        {
            who = conn.GetPeerCredentials();
        }
        catch (SharedStoreException)
        {
            conn.Dispose(); // peer vanished before we read its credentials
            return;
        }

        if (!_connections.TryEnter(who.Uid))
        {
            conn.Dispose();
            if (_connections.TakeRefusalsToReport() is > 0 and long refused)
            {
                Log.ConnectionRefused(Logger, who.Uid, _connections.MaxPerUid, refused);
            }

            return;
        }

        var session = new ClientSession(conn, who, this);
        conn.SetReceiveTimeout(_options.HelloTimeout); // the session lifts it after the hello
        conn.SetSendTimeout(_options.SendTimeout);
        lock (_sessions)
        {
            _sessions.Add(session);
        }

        try
        {
            var t = new Thread(() => RunSession(session), SessionStackBytes) { IsBackground = true, Name = $"sharedstore-client-{who.Pid}" };
            t.Start();
        }
        catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
        {
            lock (_sessions)
            {
                _sessions.Remove(session);
            }

            _connections.Leave(who.Uid);
            conn.Dispose();
            Log.SessionStartFailed(Logger, who.Pid, e.Message);
        }
    }

    // A session thread runs a receive loop and short calls (blocking ones run on the thread pool): 256 KiB of stack is
    // plenty, against the runtime's 1.5 MiB default, which matters with thousands of connections.
    private const int SessionStackBytes = 1 << 18;

    private void RunSession(ClientSession session)
    {
        try
        {
            session.Run();
        }
        catch (Exception e)
        {
            // A bug in one session must not take the broker (and every other client) down.
            Log.SessionFailed(Logger, session.Credentials.Pid, e);
        }
        finally
        {
            lock (_sessions)
            {
                _sessions.Remove(session);
            }

            _connections.Leave(session.Credentials.Uid);
        }
    }

    /// <summary>Blocks until <see cref="Stop"/> is called (SIGTERM, SIGINT).</summary>
    public void WaitForStop() => _stopped.Wait();

    public void Stop()
    {
        if (_stopping)
        {
            return;
        }

        _stopping = true;
        _listener?.Shutdown();
        List<ClientSession> sessions;
        lock (_sessions)
        {
            sessions = [.. _sessions];
        }

        // Appliers first: they apply what is already published (briefly), then stop before the segments go.
        foreach (var s in sessions)
        {
            s.StopAsyncPath();
        }

        foreach (var s in sessions)
        {
            s.Shutdown();
        }

        // Clients blocked in lock waits notice the closed connection within one sleep slice; wake them now.
        State.WakeAllSleepers();
        _stopped.Set();
    }

    public void Dispose()
    {
        Stop();
        _acceptThread?.Join(TimeSpan.FromSeconds(2));
        _listener?.Dispose();
        if (_lockFile is not null)
        {
            _ = Interop.Libc.unlink(_options.SocketPath);
            _ = Interop.Libc.unlink(_options.SocketPath + ".pid");
            _lockFile.Dispose(); // releases the flock last: no new broker binds before our socket file is gone
        }

        State.Dispose();
        if (_applyScheduler.IsValueCreated)
        {
            _applyScheduler.Value.Dispose();
        }
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
