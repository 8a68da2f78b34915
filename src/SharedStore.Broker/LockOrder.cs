namespace SharedStore.Broker;

/// <summary>The broker's ordered locks, outermost first. A thread may take a lock only while every lock it holds has a
/// lower level (docs/ARCHITECTURE.md, "Who owns which lock"). Locks not listed here are leaves: their holders take no
/// other lock (MemoryBudget, BrokerSlotLedger, ConnectionLimiter, BrokerServer's session list, the pools, NameWaiters: it
/// checks existence under the model lock only after releasing its own, and sends only after taking a waiter out). One
/// unlisted lock sits above them all: a session's name-join gate (ClientSession.Names.cs) is taken while holding no
/// lock, and takes the model lock inside (the join made for a name waiter).</summary>
internal enum LockLevel
{
    /// <summary><see cref="DurableContainer.FlushGate"/>: one flush or write-back pass per durable container.</summary>
    DurableFlush = 1,

    /// <summary>The model lock, <see cref="BrokerModel"/>: containers, objects, memberships, segment placement.</summary>
    Model = 2,

    /// <summary>The durable catalog, <see cref="DurableStore"/>: its list of containers and objects, the registry file.</summary>
    DurableCatalog = 3,

    /// <summary><see cref="DurableObject.Gate"/>: one object's write-back against its removal.</summary>
    DurableObject = 4,
}

/// <summary>
/// Takes the broker's ordered locks and checks the order on every acquisition: taking a lock whose level is not above
/// every level the thread holds throws <see cref="InvalidOperationException"/> before anything is taken (it would be
/// a possible deadlock). The check is compiled into every build, Release too, so that the test suite (which runs the
/// Release broker) exercises it on every path; it costs one thread-static read and write per acquisition, and these
/// locks are taken on control paths only (never per lock operation of a client).
/// </summary>
internal static class LockOrder
{
    [ThreadStatic]
    private static uint t_held; // bit L set: this thread holds a lock of level L

    /// <summary>Levels this thread holds (tests).</summary>
    public static uint Held => t_held;

    public static Scope Enter(object gate, LockLevel level)
    {
        Check(level);
        Monitor.Enter(gate);
        t_held |= Bit(level);
        return new Scope(gate, null, level);
    }

    public static Scope Enter(Lock gate, LockLevel level)
    {
        Check(level);
        gate.Enter();
        t_held |= Bit(level);
        return new Scope(null, gate, level);
    }

    /// <summary>Takes <paramref name="gate"/> if it is free. A try cannot deadlock, but the order is still checked: what
    /// the holder takes next must stay above it.</summary>
    public static bool TryEnter(object gate, LockLevel level, out Scope scope) => TryEnter(gate, level, TimeSpan.Zero, out scope);

    /// <summary>Takes <paramref name="gate"/>, waiting at most <paramref name="timeout"/> (infinite allowed) for it.</summary>
    public static bool TryEnter(object gate, LockLevel level, TimeSpan timeout, out Scope scope)
    {
        Check(level);
        if (!Monitor.TryEnter(gate, timeout))
        {
            scope = default;
            return false;
        }

        t_held |= Bit(level);
        scope = new Scope(gate, null, level);
        return true;
    }

    private static uint Bit(LockLevel level) => 1u << (int)level;

    private static void Check(LockLevel level)
    {
        uint sameOrInner = t_held & ~(Bit(level) - 1);
        if (sameOrInner != 0)
        {
            Fail(level, sameOrInner);
        }
    }

    private static void Fail(LockLevel level, uint held)
    {
        var names = Enum.GetValues<LockLevel>().Where(l => (held & Bit(l)) != 0);
        throw new InvalidOperationException($"lock order: {level} taken while holding {string.Join(", ", names)}");
    }

    /// <summary>One held lock; disposing releases it.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly object? _monitor;
        private readonly Lock? _lock;
        private readonly LockLevel _level;

        internal Scope(object? monitor, Lock? @lock, LockLevel level)
        {
            _monitor = monitor;
            _lock = @lock;
            _level = level;
        }

        public void Dispose()
        {
            if (_monitor is null && _lock is null)
            {
                return; // default: nothing was taken
            }

            t_held &= ~Bit(_level);
            if (_lock is not null)
            {
                _lock.Exit();
            }
            else
            {
                Monitor.Exit(_monitor!);
            }
        }
    }
}
