namespace SharedStore.Native.Handles;

/// <summary>What an operation id stands for.</summary>
internal enum OperationKind
{
    /// <summary>An <c>object_get</c>: the id is ended by <c>object_put</c>. Leases live in <see cref="FastPath"/>'s table
    /// (ids at or above <see cref="FastPath.LeaseBase"/>), never in a slot of <see cref="OperationTable"/>.</summary>
    Lease = 1,

    /// <summary>An <c>object_awrite</c> or <c>object_aread</c>: the id is ended by <c>object_return</c> once the
    /// operation finished, or by leaving its object.</summary>
    Async = 2,
}

/// <summary>
/// One slot of the operation table. Slots are allocated once and reused, so a get/put pair allocates nothing.
/// <see cref="State"/> is the id of the operation that lives in the slot, or -1 when it is free.
/// <para><b>Publication rule</b>: the fields are written while <see cref="State"/> is -1 (or, for a get,
/// by the one thread that rented the slot; then <see cref="State"/> is set to the id with
/// a release store. A thread that <i>ends</i> the operation (return, leave) first CASes <see cref="State"/> from the id
/// to -1: exactly one such thread wins, and
/// it owns the fields from then on (the CAS is a full fence, so it sees them as published). A thread that only
/// <i>reads</i> (opstatus, opcancel, opwait) copies the fields between two reads of <see cref="State"/> with a full
/// fence before the second (<see cref="OperationTable.TryRead"/>): if both read the id, nothing ended or reused the
/// slot in between, so the copy is one operation's fields, not a mix of two.</para>
/// </summary>
internal sealed class OperationSlot(int index)
{
    public const int Free = -1;

    public readonly int Index = index;
    public int State = Free;
    public int Generation;
    public OperationKind Kind;

    public AsyncOperation Operation;

    /// <summary>The object the operation belongs to.</summary>
    public ObjectHandle? Owner;
    public ReadUse? Use;

    public void Clear()
    {
        Operation = default;
        Use = null;
    }
}

/// <summary>
/// The use of its object that an <c>object_aread</c> keeps while it runs (the copy reads the object's mapping, so the
/// object must not be left under it). It is given back exactly once (<see cref="Release"/> is idempotent), by whoever
/// first sees the operation finished: the completion continuation, or synchronously by object_opstatus, object_opwait,
/// object_return, or a leave that finds it finished. The synchronous paths matter: the continuation runs on the thread
/// pool a moment after the operation turned terminal, and a caller that saw "completed" must be able to leave at once.
/// A finished read touches nothing any more: the client library releases the blocks' locks before it marks the
/// operation finished.
/// </summary>
internal sealed class ReadUse(ObjectHandle owner)
{
    private int _released;

    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            owner.Exit();
        }
    }
}

/// <summary>
/// The operation ids of <c>object_awrite</c>/<c>object_aread</c>: indexes below <see cref="FastPath.LeaseBase"/> (the
/// leases of <c>object_get</c> are the C table's, above it). Renting and freeing a slot goes through a per-thread cache
/// of free slots and takes no lock and no locked instruction; the table's lock is taken only to move a batch of slots
/// between a thread's cache and the shared free list, or to allocate new slots. A thread that dies returns its cache
/// through the cache's finalizer, so short-lived threads leak no slots.
/// </summary>
internal static class OperationTable
{
    /// <summary>Slots: the indexes below the leases'.</summary>
    public const int Capacity = FastPath.LeaseBase;

    private const int CacheCapacity = 64;
    private const int Batch = CacheCapacity / 2;

    private static readonly OperationSlot?[]?[] s_chunks = new OperationSlot?[]?[Capacity >> HandleId.ChunkBits];
    private static readonly Stack<OperationSlot> s_free = new();
    private static readonly Lock s_gate = new();
    private static int s_highWater;

    [ThreadStatic]
    private static SlotCache? t_cache;

    /// <summary>A free slot owned by the caller until it publishes or returns it; null when the table is full.</summary>
    public static OperationSlot? Rent()
    {
        var cache = t_cache ??= new SlotCache();
        if (cache.Count == 0 && !Refill(cache))
        {
            return null;
        }

        return cache.Slots[--cache.Count];
    }

    /// <summary>Makes the rented slot's operation visible under its id and returns the id.</summary>
    public static int Publish(OperationSlot slot)
    {
        int id = HandleId.Make(slot.Index, slot.Generation);
        Volatile.Write(ref slot.State, id); // release: the fields written before are visible with the id
        return id;
    }

    /// <summary>Gives back a slot the caller owns (rented and never published, or claimed): bumps its generation so
    /// the old id is dead, and caches it for this thread.</summary>
    public static void Return(OperationSlot slot)
    {
        slot.Clear();
        slot.Generation = HandleId.NextGeneration(slot.Generation);
        var cache = t_cache ??= new SlotCache();
        if (cache.Count == CacheCapacity)
        {
            Spill(cache);
        }

        cache.Slots[cache.Count++] = slot;
    }

    /// <summary>The slot an id points to, live or not.</summary>
    public static OperationSlot? Find(int id)
    {
        int index = HandleId.Index(id);
        if (id < 0 || index >= Capacity)
        {
            return null;
        }

        var chunk = Volatile.Read(ref s_chunks[index >> HandleId.ChunkBits]);
        return chunk is null ? null : Volatile.Read(ref chunk[index & (HandleId.ChunkSize - 1)]);
    }

    /// <summary>Ends operation <paramref name="id"/>: on true the caller owns its slot (and must
    /// <see cref="Return"/> it or <see cref="Publish"/> it again).</summary>
    public static bool TryClaim(int id, out OperationSlot slot)
    {
        slot = Find(id)!;
        return slot is not null && Interlocked.CompareExchange(ref slot.State, OperationSlot.Free, id) == id;
    }

    /// <summary>A consistent copy of a live operation's fields without ending it (see <see cref="OperationSlot"/>).</summary>
    public static bool TryRead(int id, out OperationKind kind, out AsyncOperation operation, out ObjectHandle? owner, out ReadUse? use)
    {
        kind = default;
        operation = default;
        owner = null;
        use = null;
        if (FastPath.IsLeaseId(id))
        {
            kind = OperationKind.Lease;
            return FastPath.IsLiveLease(id);
        }

        var slot = Find(id);
        if (slot is null || Volatile.Read(ref slot.State) != id)
        {
            return false;
        }

        kind = slot.Kind;
        operation = slot.Operation;
        owner = slot.Owner;
        use = slot.Use;
        // The copies above must complete before State is read again: a full fence (loads may not pass it).
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref slot.State) == id;
    }

    /// <summary>Every slot that currently holds an operation of one of <paramref name="owners"/> (for leave).</summary>
    public static List<(int Id, AsyncOperation Operation, ReadUse? Use)> LiveOperationsOf(HashSet<ObjectHandle> owners)
    {
        var found = new List<(int, AsyncOperation, ReadUse?)>();
        foreach (var slot in AllSlots())
        {
            int id = Volatile.Read(ref slot.State);
            if (id != OperationSlot.Free && TryRead(id, out var kind, out var op, out var owner, out var use)
                && kind == OperationKind.Async && owner is not null && owners.Contains(owner))
            {
                found.Add((id, op, use));
            }
        }

        return found;
    }

    /// <summary>Every slot made so far (the scans of leave and close; slots are published once and never move).</summary>
    private static IEnumerable<OperationSlot> AllSlots()
    {
        int high = Volatile.Read(ref s_highWater);
        for (int i = 0; i < high; i++)
        {
            var chunk = Volatile.Read(ref s_chunks[i >> HandleId.ChunkBits]);
            var slot = chunk is null ? null : Volatile.Read(ref chunk[i & (HandleId.ChunkSize - 1)]);
            if (slot is not null)
            {
                yield return slot;
            }
        }
    }

    private static bool Refill(SlotCache cache)
    {
        lock (s_gate)
        {
            while (cache.Count < Batch && s_free.Count > 0)
            {
                cache.Slots[cache.Count++] = s_free.Pop();
            }

            while (cache.Count < Batch && s_highWater < Capacity)
            {
                int index = s_highWater;
                var chunk = s_chunks[index >> HandleId.ChunkBits];
                if (chunk is null)
                {
                    chunk = new OperationSlot?[HandleId.ChunkSize];
                    Volatile.Write(ref s_chunks[index >> HandleId.ChunkBits], chunk);
                }

                var slot = new OperationSlot(index);
                Volatile.Write(ref chunk[index & (HandleId.ChunkSize - 1)], slot);
                cache.Slots[cache.Count++] = slot;
                Volatile.Write(ref s_highWater, index + 1);
            }

            return cache.Count > 0;
        }
    }

    private static void Spill(SlotCache cache)
    {
        lock (s_gate)
        {
            while (cache.Count > Batch)
            {
                s_free.Push(cache.Slots[--cache.Count]!);
            }
        }
    }

    /// <summary>A thread's free slots. Its finalizer runs once the thread has died (nothing else references it),
    /// and hands the slots back to the shared free list.</summary>
    private sealed class SlotCache
    {
        public readonly OperationSlot?[] Slots = new OperationSlot?[CacheCapacity];
        public int Count;

        ~SlotCache()
        {
            lock (s_gate)
            {
                while (Count > 0)
                {
                    s_free.Push(Slots[--Count]!);
                }
            }
        }
    }
}
