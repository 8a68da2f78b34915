namespace SharedStore.Native.Handles;

/// <summary>
/// Container and object ids: a table of <see cref="Handle"/>s. Adding and removing take the table's lock (they are
/// rare: joins and leaves); lookups take none. A lookup reads the slot and accepts the handle only if the handle's own
/// immutable <see cref="Handle.Id"/> equals the id asked for, so a slot freed and reused meanwhile is never mistaken
/// for the old id; the caller then takes a use with <see cref="Handle.TryEnter"/>, which fails if the handle began
/// closing. Chunks of slots are allocated on demand and never move.
/// </summary>
internal sealed class HandleTable<T>
    where T : Handle
{
    private readonly T?[]?[] _chunks = new T?[]?[HandleId.ChunkCount];
    private readonly int[] _generations = new int[HandleId.Capacity];
    private readonly Stack<int> _free = new();
    private readonly Lock _gate = new();
    private int _highWater;

    /// <summary>Publishes <paramref name="handle"/> under a new id; false when the table is full.
    /// <paramref name="beforePublish"/> runs once the id is set and before the handle can be found by it (an object's
    /// C-path entry is published there, so no close can find the handle before its entry is live: a close hides the
    /// entry it finds).</summary>
    public bool TryAdd(T handle, Action<T>? beforePublish = null)
    {
        lock (_gate)
        {
            int index;
            if (_free.Count > 0)
            {
                index = _free.Pop();
            }
            else if (_highWater < HandleId.Capacity)
            {
                index = _highWater++;
            }
            else
            {
                return false;
            }

            var chunk = _chunks[index >> HandleId.ChunkBits] ??= new T?[HandleId.ChunkSize];
            handle.Id = HandleId.Make(index, _generations[index]);
            try
            {
                beforePublish?.Invoke(handle);
            }
            catch
            {
                _free.Push(index); // the index was never visible: free again as it is
                throw;
            }

            // Release: the handle's fields (and Id) are visible to any thread that reads it from the slot.
            Volatile.Write(ref chunk[index & (HandleId.ChunkSize - 1)], handle);
            return true;
        }
    }

    /// <summary>The live handle of <paramref name="id"/>, or null.</summary>
    public T? Find(int id)
    {
        if (id < 0)
        {
            return null;
        }

        int index = HandleId.Index(id);
        var chunk = Volatile.Read(ref _chunks[index >> HandleId.ChunkBits]);
        if (chunk is null)
        {
            return null;
        }

        var h = Volatile.Read(ref chunk[index & (HandleId.ChunkSize - 1)]);
        return h is not null && h.Id == id ? h : null;
    }

    /// <summary>Finds the handle of <paramref name="id"/> and takes a use of it.</summary>
    public T? Enter(int id)
    {
        var h = Find(id);
        return h is not null && h.TryEnter() ? h : null;
    }

    /// <summary>Frees the handle's id (the handle is closed: its use word keeps the closing bit forever).</summary>
    public void Remove(T handle)
    {
        lock (_gate)
        {
            int index = HandleId.Index(handle.Id);
            var chunk = _chunks[index >> HandleId.ChunkBits]!;
            if (ReferenceEquals(chunk[index & (HandleId.ChunkSize - 1)], handle))
            {
                Volatile.Write(ref chunk[index & (HandleId.ChunkSize - 1)], null);
                _generations[index] = HandleId.NextGeneration(_generations[index]);
                _free.Push(index);
            }
        }
    }
}
