using System.Diagnostics;

namespace SharedStore.Broker;

/// <summary>
/// The broker's model: containers by name and id, each session's memberships, and the id counters; and the one lock
/// that guards it together with every <see cref="ContainerState"/>, <see cref="ObjectState"/> and
/// <see cref="Membership"/> it holds (the model lock, <see cref="LockLevel.Model"/>). Control calls are rare next to
/// lock traffic, which never reaches the broker, so one lock is enough. Blocking calls (destroy) wait on the same
/// monitor (<see cref="WaitUntil"/>). The classes that change the model (<see cref="ContainerRegistry"/>,
/// <see cref="SegmentPlacement"/>, <see cref="SessionRecovery"/>, <see cref="LockRepair"/>,
/// <see cref="BrokerIntrospection"/>) hold no state of their own that needs a lock; they enter this one.
/// </summary>
internal sealed class BrokerModel
{
    private readonly object _gate = new();
    private readonly Dictionary<string, ContainerState> _containers = new(StringComparer.Ordinal);
    private readonly Dictionary<uint, ContainerState> _containersById = [];
    private readonly Dictionary<ClientSession, Dictionary<uint, Membership>> _memberships = [];
    private uint _nextContainerId = 1;
    private uint _nextObjectId = 1;
    private uint _nextSegmentId = 1;

    /// <summary>Takes the model lock (checked against the lock order).</summary>
    public LockOrder.Scope Enter() => LockOrder.Enter(_gate, LockLevel.Model);

    /// <summary>Segments are unmapped: nothing may touch lock records any more.</summary>
    public bool Disposed { get; set; }

    public IEnumerable<ContainerState> Containers => _containers.Values;

    public int ContainerCount => _containers.Count;

    public bool Contains(string name) => _containers.ContainsKey(name);

    public bool TryGet(string name, out ContainerState c) => _containers.TryGetValue(name, out c!);

    /// <summary>Whether <paramref name="c"/> is still the container with its id (not freed meanwhile).</summary>
    public bool IsLive(ContainerState c) => _containersById.TryGetValue(c.Id, out var still) && still == c;

    /// <summary>A new container with the next id, not listed yet (<see cref="Add"/>): created by a client or brought
    /// back by restore.</summary>
    public ContainerState NewContainer(string name, long groupId, uint creatorUid, Protocol.WritePolicy writePolicy, int blockSize, int maxMembers) => new()
    {
        MaxMembers = maxMembers,
        Id = _nextContainerId++,
        Name = name,
        GroupId = groupId,
        CreatorUid = creatorUid,
        WritePolicy = writePolicy,
        BlockSize = blockSize,
    };

    public void Add(ContainerState c)
    {
        _containers.Add(c.Name, c);
        _containersById.Add(c.Id, c);
    }

    public void RemoveContainer(ContainerState c)
    {
        _containers.Remove(c.Name);
        _containersById.Remove(c.Id);
    }

    public void Clear()
    {
        _containers.Clear();
        _containersById.Clear();
    }

    public uint NextObjectId() => _nextObjectId++;

    public uint NextSegmentId() => _nextSegmentId++;

    // ---- Memberships (session → container id → membership) -----------------------------------------------

    /// <summary>The session's memberships (empty when it has none).</summary>
    public IReadOnlyDictionary<uint, Membership> MembershipsOf(ClientSession session) =>
        _memberships.TryGetValue(session, out var ms) ? ms : s_none;

    private static readonly Dictionary<uint, Membership> s_none = [];

    public bool IsMember(ClientSession session, uint containerId) => MembershipsOf(session).ContainsKey(containerId);

    public void AddMembership(Membership m)
    {
        if (!_memberships.TryGetValue(m.Session, out var ms))
        {
            ms = [];
            _memberships.Add(m.Session, ms);
        }

        ms.Add(m.Container.Id, m);
    }

    public void RemoveMembership(Membership m)
    {
        if (_memberships.TryGetValue(m.Session, out var ms) && ms.Remove(m.Container.Id) && ms.Count == 0)
        {
            _memberships.Remove(m.Session);
        }
    }

    public Membership Member(ClientSession session, uint containerId) =>
        MembershipsOf(session).TryGetValue(containerId, out var m)
            ? m
            : throw new BrokerError(ErrorCode.NotFound, $"container {containerId} does not exist or this client is not a member");

    public static ObjectState Object(Membership m, uint objectId) =>
        m.Container.ObjectsById.TryGetValue(objectId, out var o) && m.ObjectUses.ContainsKey(objectId)
            ? o
            : throw new BrokerError(ErrorCode.NotFound, $"object {objectId} does not exist in container '{m.Container.Name}' or was not joined");

    // ---- Waiting ------------------------------------------------------------------------------------------

    /// <summary>Wakes the calls waiting in <see cref="WaitUntil"/> (under the model lock).</summary>
    public void PulseAll() => Monitor.PulseAll(_gate);

    /// <summary>Under the model lock: waits until <paramref name="condition"/> holds, the timeout passes or the token
    /// is canceled; returns whether the condition holds.</summary>
    public bool WaitUntil(Func<bool> condition, TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        // The callback takes _gate, which this thread holds whenever it is not inside Monitor.Wait. Disposing the
        // registration would wait for a callback already running on the canceling thread — which waits for _gate:
        // a deadlock of the whole broker. Unregister does not wait; a late callback just pulses once more. (It takes
        // _gate without LockOrder: it only pulses, and runs on this thread, re-entering, when the token is already
        // canceled at registration.)
        var reg = token.Register(() =>
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        });
        try
        {
            return WaitLoop(condition, deadline, token);
        }
        finally
        {
            reg.Unregister();
        }
    }

    private bool WaitLoop(Func<bool> condition, long deadline, CancellationToken token)
    {
        while (!condition())
        {
            if (token.IsCancellationRequested)
            {
                return false;
            }

            long left = deadline - Stopwatch.GetTimestamp();
            if (left <= 0)
            {
                return false;
            }

            int ms = (int)Math.Clamp(left * 1000 / Stopwatch.Frequency, 1, 1000);
            Monitor.Wait(_gate, ms);
        }

        return true;
    }
}
