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
/// One thread-static read per rent (the thread's <see cref="LeaseCache"/>); the record remembers its cache, whose
/// stack range is the owner-thread check of a release (<see cref="LeaseCache.IsCallingThread"/>).
/// <para><b>No write barrier on the hot path.</b> The free list links records by index into the cache's array
/// (<see cref="NextFree"/>), not by reference, and <see cref="Object"/> is stored only when it changes: a get/put
/// pair writes no object reference, so it calls no GC write-barrier helper (three of them before: the object, the
/// list's next and head; about 1.5 ns each here, measured by the bench's <c>get-put-pieces</c>).</para>
/// </summary>
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

    /// <summary>The index of the next record on the owner's free list, or -1. Only the owner thread touches it.</summary>
    internal int NextFree = -1;

    /// <summary>On the owner's free list (owner thread only): an even <see cref="Generation"/> with this clear is a record
    /// put by another thread, which the owner may take back (<see cref="LeaseCache"/>).</summary>
    internal bool Listed;

    internal LeaseRecord(LeaseCache owner, int index)
    {
        Owner = owner;
        Index = index;
    }

    /// <summary>The cache of the thread that rents this record: only that thread lists or unlists it.</summary>
    internal LeaseCache Owner { get; }

    /// <summary>The record's index in its owner's array.</summary>
    internal int Index { get; }

    /// <summary>A free record of this thread, made live (odd generation), with <paramref name="obj"/> as its object.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LeaseRecord Rent(SharedObject obj)
    {
        var r = LeaseCache.Current.Take(); // the thread-static: the one cache that is surely this thread's

        // Only this thread references a record on its free list (stale leases compare generations and never write),
        // so a plain increment suffices here.
        r.Generation++;
        if (!ReferenceEquals(r.Object, obj))
        {
            r.Object = obj; // the one reference store, only when the thread switches objects
        }

        return r;
    }

    /// <summary>Ends the lease of <paramref name="generation"/> and recycles the record; false if that lease had
    /// already ended.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Release(LeaseRecord r, int generation)
    {
        var owner = r.Owner;
        if (owner.IsCallingThread())
        {
            if (r.Generation != generation)
            {
                return false;
            }

            r.Generation = generation + 1;
            owner.Give(r);
            return true;
        }

        // Another thread: list nothing (the free list is the renting thread's alone); the CAS makes two such puts race
        // safely. The owner takes the record back when its list runs dry (LeaseCache.Take): the even generation,
        // published by this CAS, says it is free, and the putter touches the record no more after it.
        return Interlocked.CompareExchange(ref r.Generation, generation + 1, generation) == generation;
    }
}

/// <summary>A thread's lease records and their free list (indices into <see cref="_records"/>, so listing a record
/// stores no reference). Records put by another thread are not listed by that thread; when the list is empty,
/// <see cref="Take"/> looks for them (free: even generation, yet unlisted) before it makes new ones, and doubles the
/// array when fewer than half were found, so the scan costs O(1) per rent, amortized.
/// <para><b>Which thread is putting, without a thread-static read.</b> A [ThreadStatic] read costs a call to
/// <c>__tls_get_addr</c> here (the runtime is a dlopen'ed library), about 2 ns, and a get/put pair made two (the
/// bench's <c>get-put-pieces</c>). A rent still reads it (it must find the calling thread's own cache). A release only
/// asks whether it runs on the record's owner thread: the cache records its thread's stack,
/// [<see cref="_stackLow"/>, +<see cref="_stackSize"/>), from glibc when it is made, and <see cref="IsCallingThread"/>
/// compares the address of a local with it. The stacks of live threads are disjoint, so while the owner lives, a
/// caller whose stack pointer lies in its range is the owner. Once the owner has exited, new threads whose stacks reuse
/// part of the range may take the owner path of its cache too, even two at once; but nobody takes records from a dead
/// thread's cache any more (rents go through the thread-static), so what they list on it is never read again, and each
/// of them only writes the generation of the record it puts, as the owner would. Managed code never runs on another
/// stack (no sigaltstack, no fibers). When glibc cannot tell the range it is empty and every caller takes the
/// other-thread path (a CAS; correct, and the record comes back through <see cref="Refill"/>). The one race this leaves
/// is the one the thread-static check left too: two threads putting the same lease at the same instant, one of them on
/// the owner path (see <see cref="ObjectLease.Dispose"/>).</para>
/// </summary>
internal sealed class LeaseCache
{
    [ThreadStatic]
    private static LeaseCache? t_current;

    private readonly nuint _stackLow;
    private readonly nuint _stackSize;
    private LeaseRecord[] _records = [];
    private int _count;
    private int _free = -1;

    private LeaseCache() => (_stackLow, _stackSize) = Interop.Libc.CurrentThreadStack();

    /// <summary>Records this thread has made (tests: records put by other threads come back instead of piling up).</summary>
    internal int RecordCount => _count;

    public static LeaseCache Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_current ?? Create();
    }

    /// <summary>Whether the caller runs on this cache's thread's stack (see the class comment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe bool IsCallingThread()
    {
        byte here = 0;
        return (nuint)(&here) - _stackLow < _stackSize;
    }

    /// <summary>Unlists a free record (owner thread).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public LeaseRecord Take()
    {
        int i = _free;
        var records = _records;
        if ((uint)i < (uint)records.Length)
        {
            var r = records[i];
            _free = r.NextFree;
            r.Listed = false;
            return r;
        }

        return Refill();
    }

    /// <summary>Lists a record this thread released (owner thread).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Give(LeaseRecord r)
    {
        r.NextFree = _free;
        r.Listed = true;
        _free = r.Index;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static LeaseCache Create() => t_current = new LeaseCache();

    /// <summary>The list is empty: take back the records other threads put, then grow if that found few.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private LeaseRecord Refill()
    {
        int found = 0;
        for (int i = 0; i < _count; i++)
        {
            var r = _records[i];
            if (!r.Listed && (Volatile.Read(ref r.Generation) & 1) == 0)
            {
                Give(r);
                found++;
            }
        }

        if (found * 2 < Math.Max(_count, 1))
        {
            int grown = Math.Max(4, _count * 2);
            Array.Resize(ref _records, grown);
            for (int i = _count; i < grown; i++)
            {
                var r = new LeaseRecord(this, i);
                _records[i] = r;
                Give(r);
            }

            _count = grown;
        }

        return Take();
    }
}
