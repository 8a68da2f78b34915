using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// Sessions waiting for a name to exist (<c>name_wait</c>, issue 17): a container name, or an object name in one
/// container. The broker pushes a <c>name_event</c> to each waiter when the name is created, so a client that waits for
/// a producer's container or object never polls. One lock of its own, never held while calling out (sends happen after
/// the waiter was taken out under it).
/// <para><b>No lost event.</b> <see cref="Wait"/> registers the waiter under this lock <i>before</i> it asks the
/// broker state whether the name exists (under the model lock), and a create calls <see cref="Created"/> <i>after</i>
/// the registry made the name visible (under the model lock). In the order of the model lock either the create came
/// first, and the check sees the name, or the check came first, and then the registration (before the check) precedes
/// the create's <see cref="Created"/>, which finds it. When both happen the waiter is taken out once: whoever removes it
/// from the table under this lock sends the one answer (<see cref="TryTake"/>); so do the timer and a cancel.</para>
/// <para><b>Join on the waiter's behalf</b> (<c>name_wait.join</c>, protocol 5). With a <see cref="JoinForWaiter"/> the
/// answer is not a name_event but the reply of the join the waiter would make next, made by the broker for it (same
/// checks, same errors): the waiter's return costs the one push, not a second round trip. A name destroyed between
/// the event and that join (NotFound, Destroyed) is waited for again with the time left.</para>
/// <para><b>Bounds.</b> At most <see cref="MaxPerSession"/> waits per session (BUSY beyond), each removed by its
/// answer, its timeout (a timer), its cancel, or the session's end.</para>
/// </summary>
internal sealed class NameWaiters
{
    /// <summary>Waits one session may have at once: far above any program's need (one per thread that waits), low
    /// enough that a client cannot grow the broker's tables without bound.</summary>
    public const int MaxPerSession = 1024;

    private readonly Lock _gate = new();
    private readonly Dictionary<(uint ContainerId, string Name), List<Waiter>> _byName = [];
    private readonly Dictionary<(ClientSession Session, ulong RequestId), Waiter> _byRequest = [];
    private readonly Dictionary<ClientSession, int> _perSession = [];

    /// <summary>Waits in the broker right now (for status and tests).</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _byRequest.Count;
            }
        }
    }

    /// <summary>Registers a wait of <paramref name="session"/>'s request <paramref name="requestId"/> for the name and
    /// answers it at once when <paramref name="exists"/> says the name is there, else when it is created, the timeout
    /// ends, or the wait is canceled.</summary>
    /// <exception cref="BrokerError">Busy (too many waits), InvalidArgument (request id in use), or what
    /// <paramref name="exists"/> throws (NotFound for an object wait of a non-member…); nothing stays registered.</exception>
    /// <summary>Joins the awaited name for the waiting session and returns the reply to push; null when there is no
    /// one to push to (the session is closing, and joins nothing). Throws <see cref="BrokerError"/> for the join's
    /// errors; NotFound and Destroyed mean "the name went again".</summary>
    public delegate (Response Response, SegmentGrant? Grant)? JoinForWaiter();

    public void Wait(ClientSession session, ulong requestId, uint containerId, string name, TimeSpan timeout, Func<bool> exists, JoinForWaiter? join = null)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        var w = new Waiter(session, requestId, (containerId, name)) { Owner = this, Exists = exists, Join = join, Deadline = deadline };
        lock (_gate)
        {
            int n = _perSession.GetValueOrDefault(session);
            if (n >= MaxPerSession)
            {
                throw new BrokerError(ErrorCode.Busy, $"this client already has {MaxPerSession} name waits");
            }

            if (!_byRequest.TryAdd((session, requestId), w))
            {
                throw new BrokerError(ErrorCode.InvalidArgument, $"request id {requestId} is already in use by a waiting call");
            }

            _perSession[session] = n + 1;
            if (!_byName.TryGetValue(w.Key, out var list))
            {
                _byName[w.Key] = list = [];
            }

            list.Add(w);
        }

        bool there;
        try
        {
            there = exists(); // after the registration: see the class comment
        }
        catch
        {
            TryTake(w);
            throw;
        }

        if (there)
        {
            Answer(w, null);
            return;
        }

        if (timeout != Timeout.InfiniteTimeSpan)
        {
            var timer = new Timer(static s => { var x = (Waiter)s!; x.Owner.Answer(x, ErrorCode.Timeout); }, w, Timeout.Infinite, Timeout.Infinite);
            lock (_gate)
            {
                if (!_byRequest.ContainsKey((session, requestId)) || !ReferenceEquals(_byRequest[(session, requestId)], w))
                {
                    timer.Dispose(); // answered already
                    return;
                }

                w.Timer = timer;
            }

            timer.Change(timeout, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>A container (<paramref name="containerId"/> 0) or an object of container
    /// <paramref name="containerId"/> named <paramref name="name"/> was created: answers everyone waiting for it.
    /// Called after the name became visible in the broker state.</summary>
    public void Created(uint containerId, string name)
    {
        List<Waiter>? list;
        lock (_gate)
        {
            if (_byName.Count == 0 || !_byName.Remove((containerId, name), out list))
            {
                return;
            }

            foreach (var w in list)
            {
                Forget(w);
            }
        }

        // Sent off the creator's session thread: a waiter that does not read could hold a send for the send timeout
        // (10 s), and the creator's own reply must not wait for it.
        ThreadPool.UnsafeQueueUserWorkItem(static waiters =>
        {
            foreach (var w in waiters)
            {
                Send(w, null);
            }
        }, list, preferLocal: false);
    }

    /// <summary>Cancels the wait of request <paramref name="requestId"/> (answered CANCELED); false when there is none.</summary>
    public bool Cancel(ClientSession session, ulong requestId)
    {
        Waiter? w;
        lock (_gate)
        {
            if (!_byRequest.TryGetValue((session, requestId), out w))
            {
                return false;
            }
        }

        Answer(w, ErrorCode.Canceled);
        return true;
    }

    /// <summary>The session ended: its waits go, unanswered.</summary>
    public void SessionClosed(ClientSession session)
    {
        var gone = new List<Waiter>();
        lock (_gate)
        {
            if (!_perSession.ContainsKey(session))
            {
                return;
            }

            foreach (var ((s, _), w) in _byRequest)
            {
                if (s == session)
                {
                    gone.Add(w);
                }
            }

            foreach (var w in gone)
            {
                _byName[w.Key].Remove(w);
                if (_byName[w.Key].Count == 0)
                {
                    _byName.Remove(w.Key);
                }

                Forget(w);
            }
        }

        foreach (var w in gone)
        {
            w.Timer?.Dispose();
        }
    }

    private void Answer(Waiter w, ErrorCode? error)
    {
        if (TryTake(w))
        {
            Send(w, error);
        }
    }

    /// <summary>Takes the waiter out of every table; true for exactly one caller.</summary>
    private bool TryTake(Waiter w)
    {
        lock (_gate)
        {
            if (!_byRequest.TryGetValue((w.Session, w.RequestId), out var found) || !ReferenceEquals(found, w))
            {
                return false;
            }

            var list = _byName[w.Key];
            list.Remove(w);
            if (list.Count == 0)
            {
                _byName.Remove(w.Key);
            }

            Forget(w);
            return true;
        }
    }

    // Under _gate: out of the request and session tables (the caller handles _byName).
    private void Forget(Waiter w)
    {
        _byRequest.Remove((w.Session, w.RequestId));
        int n = _perSession[w.Session] - 1;
        if (n == 0)
        {
            _perSession.Remove(w.Session);
        }
        else
        {
            _perSession[w.Session] = n;
        }
    }

    private static void Send(Waiter w, ErrorCode? error)
    {
        w.Timer?.Dispose();
        if (error is null && w.Join is { } join)
        {
            SendJoined(w, join);
            return;
        }

        var r = new Response { Id = w.RequestId };
        if (error is { } e)
        {
            r.Error = (Protocol.ErrorCode)e;
            r.Message = e == ErrorCode.Timeout
                ? $"{Describe(w)} did not appear in time"
                : $"the wait for {Describe(w)} was canceled";
        }
        else
        {
            r.NameEvent = new NameEvent { ContainerId = w.Key.ContainerId, Name = w.Key.Name };
        }

        w.Session.Push(r);
    }

    // The name exists (or existed a moment ago): join it for the waiter and push the join's reply; when it went again,
    // wait again with the time left (the waiter was taken out of the tables: this is a new registration).
    private static void SendJoined(Waiter w, JoinForWaiter join)
    {
        (Response Response, SegmentGrant? Grant)? reply;
        try
        {
            reply = join();
        }
        catch (BrokerError e) when (e.Code is ErrorCode.NotFound or ErrorCode.Destroyed)
        {
            long left = w.Deadline == long.MaxValue ? -1 : w.Deadline - Environment.TickCount64;
            if (left == 0 || left < -1)
            {
                w.Session.Push(new Response { Id = w.RequestId, Error = Protocol.ErrorCode.Timeout, Message = $"{Describe(w)} did not appear in time" });
                return;
            }

            try
            {
                w.Owner.Wait(w.Session, w.RequestId, w.Key.ContainerId, w.Key.Name, left == -1 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(left), w.Exists, join);
            }
            catch (BrokerError again)
            {
                w.Session.Push(new Response { Id = w.RequestId, Error = (Protocol.ErrorCode)again.Code, Message = again.Message });
            }

            return;
        }
        catch (BrokerError e)
        {
            reply = (new Response { Id = w.RequestId, Error = (Protocol.ErrorCode)e.Code, Message = e.Message }, null);
        }

        if (reply is { } r)
        {
            w.Session.Push(r);
        }
    }

    private static string Describe(Waiter w) =>
        w.Key.ContainerId == 0 ? $"container '{w.Key.Name}'" : $"object '{w.Key.Name}' (container {w.Key.ContainerId})";

    private sealed class Waiter(ClientSession session, ulong requestId, (uint ContainerId, string Name) key)
    {
        public ClientSession Session { get; } = session;

        public ulong RequestId { get; } = requestId;

        public (uint ContainerId, string Name) Key { get; } = key;

        public NameWaiters Owner { get; set; } = null!;

        public Func<bool> Exists { get; set; } = null!;

        /// <summary>Set for name_wait.join: what builds the pushed reply.</summary>
        public JoinForWaiter? Join { get; set; }

        /// <summary>Environment.TickCount64 at which the wait ends; long.MaxValue for none.</summary>
        public long Deadline { get; set; }

        public Timer? Timer { get; set; }
    }
}
