namespace SharedStore.Native.Handles;

/// <summary>
/// A container or object id's entry, with the use count that makes every export thread-safe against a concurrent
/// leave or destroy of the same id. State word: bit 31 = closing, bits 0-30 = calls in progress plus (for objects)
/// leases and asynchronous reads still outstanding.
/// <list type="number">
/// <item>A call <see cref="TryEnter"/>s with one locked increment; if the closing bit was set it backs out and the
/// id counts as gone (NotFound).</item>
/// <item>Leave and destroy <see cref="TryClose"/> with a CAS from exactly 0 to closing, so they succeed only when no
/// call is inside and nothing is held; otherwise they return Busy and change nothing.</item>
/// </list>
/// Both sides are single locked instructions on one word, so they are totally ordered: either the call's increment
/// comes first (the CAS from 0 fails) or the CAS does (the increment sees the bit). A leave can therefore never unmap
/// memory that a get, write or asynchronous read of another thread is using. A failed leave or destroy
/// (<see cref="Reopen"/>) clears the bit with one atomic add, keeping any increments that raced with it.
/// </summary>
internal abstract class Handle
{
    private const int Closing = int.MinValue;
    private int _state;

    /// <summary>The id handed to C; set once, before the handle is published in its table.</summary>
    public int Id { get; set; }

    /// <summary>Takes a use; false when the handle is closing or closed.</summary>
    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _state) < 0)
        {
            Interlocked.Decrement(ref _state); // closing: the increment must not stay (Reopen restores the count)
            return false;
        }

        return true;
    }

    /// <summary>Returns a use taken by <see cref="TryEnter"/>.</summary>
    public void Exit() => Interlocked.Decrement(ref _state);

    /// <summary>True once <see cref="TryClose"/> succeeded (until a <see cref="Reopen"/>). One plain load: callers that
    /// announce themselves elsewhere rather than take a use pair it with an asymmetric barrier (<see cref="ObjectHandle"/>).</summary>
    public bool IsClosing => Volatile.Read(ref _state) < 0;

    /// <summary>Marks the handle closing if nothing uses it.</summary>
    public bool TryClose()
    {
        if (Interlocked.CompareExchange(ref _state, Closing, 0) != 0)
        {
            return false;
        }

        if (InUseBeyondCalls())
        {
            Reopen();
            return false;
        }

        return true;
    }

    /// <summary>Called once the closing bit is set: whether something that takes no use of the handle still uses it
    /// (then the close fails and changes nothing).</summary>
    protected virtual bool InUseBeyondCalls() => false;

    /// <summary>Undoes <see cref="TryClose"/> (the leave or destroy failed): adding int.MinValue flips bit 31 back.</summary>
    public void Reopen()
    {
        OnReopen();
        Interlocked.Add(ref _state, Closing);
    }

    /// <summary>A close that set the closing bit failed and is being undone.</summary>
    protected virtual void OnReopen()
    {
    }
}

/// <summary>A container id: the joined <see cref="SharedStore.Container"/>, its connection, and the object ids opened
/// through it (so that leaving the container closes them first).</summary>
internal sealed class ContainerHandle(Container container, Connection connection) : Handle
{
    private readonly List<ObjectHandle> _objects = [];

    public Container Container { get; } = container;

    public Connection Connection { get; } = connection;

    public void Add(ObjectHandle o)
    {
        lock (_objects)
        {
            _objects.Add(o);
        }
    }

    public void Remove(ObjectHandle o)
    {
        lock (_objects)
        {
            _objects.Remove(o);
        }
    }

    public ObjectHandle[] Objects()
    {
        lock (_objects)
        {
            return [.. _objects];
        }
    }
}

/// <summary>An object id: the joined <see cref="SharedObject"/> and its container id.
/// <para><b>Gets and puts take no use of the handle</b> (two locked instructions less per pair: <c>c-get-put-1block</c>
/// in the bench). They run in C (<c>native/fastpath.c</c>) against the object's entry in <see cref="FastPath"/>, and
/// announce themselves in their lease slot, which a close scans (<see cref="FastPath.AnyLeaseOf"/>): a get stores
/// ANNOUNCED (a release store) and only then loads the entry's id, and touches the object's mapping only if the id is
/// still this object's; a close sets the closing bit (a locked CAS), hides the entry (id = -1), runs
/// <see cref="Interlocked.MemoryBarrierProcessWide"/> (membarrier: every thread of the process executes a full
/// barrier) and then scans the leases. This is the asymmetric Dekker pair: after the process-wide barrier either the
/// get's announcement is visible to the scan (the close fails with Busy), or the get's load comes after the barrier
/// and sees -1 (the get goes to the managed half, <c>ssn_get_slow</c>, which finds the closing bit and says NotFound,
/// having touched nothing). A put claims its lease with a CAS from the id to PUTTING and frees it only after the
/// release, so the scan sees the lease (live id), the put in progress (PUTTING), or nothing that still touches the
/// mapping. A lease's object index is written before its state (x86 keeps stores in order), so a scan that sees a
/// state sees the object it belongs to or a later one of the same slot, which only makes the close fail more often,
/// never wrongly succeed. A close that finds any of them shows the entry again, clears the bit and fails (Busy); so
/// does a get's back-out window, which makes a get that overlaps a failed close return NotFound, as a call that found
/// the id closing always did.</para>
/// </summary>
internal sealed class ObjectHandle(SharedObject obj, ContainerHandle container) : Handle
{
    /// <summary>The leases of this object and the gets and puts in progress on it (see the class comment).</summary>
    protected override bool InUseBeyondCalls()
    {
        FastPath.Hide(this);
        Interlocked.MemoryBarrierProcessWide();
        return FastPath.AnyLeaseOf(this); // true: TryClose reopens, which shows the entry again
    }

    protected override void OnReopen() => FastPath.Show(this);

    public SharedObject Object { get; } = obj;

    public ContainerHandle Container { get; } = container;

    /// <summary>True once the broker connection behind this object is gone.</summary>
    public bool BrokerLost => Container.Connection.Client.IsBrokerLost;
}
