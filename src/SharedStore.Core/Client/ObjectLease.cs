using System.Runtime.CompilerServices;

namespace SharedStore;

/// <summary>
/// Read access to a range of a shared object, returned by <see cref="SharedObject.Get(long, long, TimeSpan, CancellationToken)"/>
/// (the seed's <c>object_get</c>). The memory is the object's own mapping: no copy. Disposing is the seed's
/// <c>object_put</c>; a lease may be disposed once, and its memory must not be used afterwards.
/// </summary>
public readonly unsafe struct ObjectLease : IDisposable
{
    private readonly LeaseRecord? _record;
    private readonly int _generation;

    internal ObjectLease(LeaseRecord record, int generation)
    {
        _record = record;
        _generation = generation;
    }

    /// <summary>Offset of the range in the object.</summary>
    public long Offset => Live.Offset;

    /// <summary>Length of the range in bytes (64-bit: objects may exceed 2 GiB).</summary>
    public long Length => Live.Length;

    /// <summary>Address of the range's first byte in this process.</summary>
    public byte* Pointer
    {
        get
        {
            var r = Live;
            return r.Object!.DataPointer + r.Offset;
        }
    }

    /// <summary>
    /// True when a block of the range was left half written by a writer that died mid-write, and no complete
    /// write of that block has happened since: the content mixes old and new bytes. The data is still readable.
    /// </summary>
    public bool Torn => Live.Torn;

    /// <summary>The object's version (<see cref="SharedObject.Version"/>) read once the range was locked: every write of
    /// the range's blocks with a version up to this one is in the leased bytes, and none after it (until the lease is
    /// disposed). Bytes written through a lease's span do not advance versions.</summary>
    public long Version => Live.Version;

    /// <summary>The range as a span (ranges up to 2 GiB − 1; use <see cref="Pointer"/> and <see cref="Length"/> beyond).
    /// Writing through it is the caller's business: gets share the range, so only write what no other holder reads
    /// (the seed's <c>get</c> hands out a writable buffer too); a read-only member's span faults on write.</summary>
    /// <exception cref="InvalidOperationException">The range is 2 GiB or more.</exception>
    public Span<byte> Span
    {
        get
        {
            var r = Live;
            if (r.Length > int.MaxValue)
            {
                ThrowHelper.InvalidOperation($"a {r.Length}-byte range does not fit a Span; use Pointer and Length");
            }

            return new Span<byte>(r.Object!.DataPointer + r.Offset, (int)r.Length);
        }
    }

    /// <summary>The range as a read-only span (up to 2 GiB − 1).</summary>
    public ReadOnlySpan<byte> ReadOnlySpan => Span;

    private LeaseRecord Live
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            var r = _record;
            if (r is null || Volatile.Read(ref r.Generation) != _generation)
            {
                ThrowHelper.LeaseAlreadyReleased();
            }

            return r;
        }
    }

    /// <summary>The seed's <c>object_put</c>: releases the range's read locks.</summary>
    /// <exception cref="InvalidOperationException">The lease was already put (or is default).</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Dispose()
    {
        var r = _record;
        // Generation is odd while the lease is live; a put makes it even, so a second put of the same lease (or of a
        // copy) fails before anything is touched. On the renting thread a plain check-and-increment suffices (nothing
        // else writes the record); a put from another thread uses a CAS. Two threads putting the same lease at the
        // same instant, one of them the renting thread, is a data race this does not catch; even then the shared
        // count cannot go below zero (ReleaseRead never borrows), so no other process's hold is touched.
        // Read what the put needs before the record can be recycled (it is, inside Release, on the renting thread).
        if (r is null)
        {
            ThrowHelper.LeaseAlreadyReleased();
        }

        var obj = r.Object!;
        long first = r.First, last = r.Last;
        if (!LeaseRecord.Release(r, _generation))
        {
            ThrowHelper.LeaseAlreadyReleased();
        }

        obj.Put(first, last);
    }
}

/// <summary>The state behind an <see cref="ObjectLease"/>. Recycled through a per-thread free list, so a get/put
/// pair allocates nothing; <see cref="Generation"/> tells a stale lease (a copy already put) from the live one.
/// One thread-static read per rent and per release (the thread's <see cref="LeaseCache"/>); the record remembers its
/// cache, which doubles as the owner-thread check.</summary>
internal sealed class LeaseRecord
{
    public int Generation; // odd: live; even: free
    public SharedObject? Object;
    public long Offset;
    public long Length;
    public long First;
    public long Last;
    public bool Torn;
    public long Version;
    private LeaseRecord? _next;
    private LeaseCache? _owner;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LeaseRecord Rent()
    {
        var cache = LeaseCache.Current;
        var r = cache.Free;
        if (r is not null)
        {
            cache.Free = r._next;
        }
        else
        {
            r = new LeaseRecord { _owner = cache };
        }

        // Only this thread references a record on its free list (stale leases compare generations and never write),
        // so a plain increment suffices here.
        r.Generation++;
        return r;
    }

    /// <summary>Ends the lease of <paramref name="generation"/> and recycles the record; false if that lease had
    /// already ended.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Release(LeaseRecord r, int generation)
    {
        var owner = r._owner!;
        if (owner == LeaseCache.CurrentOrNull)
        {
            if (r.Generation != generation)
            {
                return false;
            }

            r.Generation = generation + 1;
            r._next = owner.Free;
            owner.Free = r;
            return true;
        }

        // Another thread: recycle nothing (the free list is the renting thread's alone); the CAS makes two such puts
        // race safely.
        return Interlocked.CompareExchange(ref r.Generation, generation + 1, generation) == generation;
    }
}

/// <summary>A thread's free list of lease records.</summary>
internal sealed class LeaseCache
{
    [ThreadStatic]
    private static LeaseCache? t_current;

    public LeaseRecord? Free;

    public static LeaseCache Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_current ?? Create();
    }

    public static LeaseCache? CurrentOrNull
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_current;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static LeaseCache Create() => t_current = new LeaseCache();
}
