using System.Runtime.InteropServices;

namespace SharedStore.Native.Handles;

/// <summary>
/// Spec of the tables the C get/put path (<c>native/fastpath.c</c>) shares with this managed half: process-local
/// memory, not shared memory, but two languages read it, so it is pinned like a shared layout (FastPathLayoutTests
/// compares these offsets with the ones a C program compiled with native/fastpath.h prints).
/// <code>
/// ss_tables (24 bytes)          ss_object_entry (64 bytes)                ss_lease (32 bytes)
///  0 entry_chunks  ptr           0 id (live object id or -1)  int32      0 state (0 free, -2 announced,  int32
///  8 leases        ptr           4 slot (lock slot)           int32          -3 putting, else the lease id)
/// 16 lease_high_water int32      8 data (byte 0)              ptr        4 generation                   int32
/// 20 reserved                   16 records (block 0's record) ptr        8 object (object index)        int32
///                               24 size                       uint64    12 slot                         int32
///                               32 lost (broker-lost word)    ptr       16 first (first block's record) ptr
///                               40 record_size                int32     24 count (blocks)               int32
///                               44 block_shift                int32     28 record_size                  int32
///                               48 closed (handle-closed word) ptr
///                               56 reserved
/// </code>
/// <para><b>Publication rule of an entry.</b> Written only by the thread that opened the object id, after the id was
/// added to the object table: the fields first, then <c>id</c> with a release store. A close hides it
/// (<c>id</c> = -1) before its process-wide barrier and lease scan, and shows it again if it fails; the fields are
/// rewritten only for the next object of the same index, after the close that hid the old one succeeded. The C get
/// reads the fields only after reading the live id a second time, after its announcement (fastpath.c's comment).</para>
/// <para>Operation ids with an index at or above <see cref="LeaseBase"/> are leases of this table; below it, the
/// asynchronous operations of <see cref="OperationTable"/>.</para>
/// </summary>
internal static unsafe class FastPath
{
    public const int LeaseBase = 1 << 17;
    public const int LeaseCapacity = 1 << 17;
    public const int LeaseFree = 0;
    public const int LeaseAnnounced = -2;
    public const int LeasePutting = -3;
    public const int EntrySize = 64;
    public const int LeaseSize = 32;
    public const int TablesSize = 24;
    public const int CacheLine = 64;

    private static readonly Lock s_gate = new();
    private static nint s_tables; // FastTables*

    /// <summary>The tables, made on first use (the C side asks through <c>ssn_fast_tables</c>).</summary>
    public static FastTables* Tables
    {
        get
        {
            var t = (FastTables*)Volatile.Read(ref s_tables);
            return t is not null ? t : Create();
        }
    }

    private static FastTables* Create()
    {
        lock (s_gate)
        {
            if (s_tables == 0)
            {
                var t = (FastTables*)NativeMemory.AllocZeroed((nuint)TablesSize);
                t->EntryChunks = (FastObjectEntry**)NativeMemory.AllocZeroed((nuint)HandleId.ChunkCount, (nuint)sizeof(nint));
                // mmap'd by malloc (pages cost nothing until used), 16 bytes into its page: rounded up to a cache line so
                // that no lease straddles two lines (a get writes its lease, a put CASes it).
                nint leases = (nint)NativeMemory.AllocZeroed((nuint)(LeaseCapacity * LeaseSize + CacheLine));
                t->Leases = (FastLease*)((leases + (CacheLine - 1)) & ~(nint)(CacheLine - 1));
                Volatile.Write(ref s_tables, (nint)t);
            }

            return (FastTables*)s_tables;
        }
    }

    /// <summary>Fills and publishes <paramref name="h"/>'s entry (see the publication rule).</summary>
    public static void Publish(ObjectHandle h)
    {
        FastObjectEntry* e = EntryFor(HandleId.Index(h.Id), create: true);
        var view = h.Object.View;
        e->Slot = view.Slot;
        e->Data = view.Data;
        e->Records = (byte*)view.Locks;
        e->Size = (ulong)view.Size;
        e->Lost = h.Object.Connection.WaitPolicy.BrokerLostWord;
        e->RecordSize = view.RecordSize;
        e->BlockShift = view.BlockShift;
        e->Closed = h.Object.ClosedWord;
        Volatile.Write(ref e->Id, h.Id);
    }

    /// <summary>A close begins: C gets of <paramref name="h"/> from now on go to the managed half (which finds the
    /// handle closing). Followed by the caller's process-wide barrier and <see cref="AnyLeaseOf"/>.</summary>
    public static void Hide(ObjectHandle h)
    {
        FastObjectEntry* e = EntryFor(HandleId.Index(h.Id), create: false);
        if (e is not null && e->Id == h.Id)
        {
            Volatile.Write(ref e->Id, -1);
        }
    }

    /// <summary>The close failed: the entry is live again.</summary>
    public static void Show(ObjectHandle h)
    {
        FastObjectEntry* e = EntryFor(HandleId.Index(h.Id), create: false);
        if (e is not null && e->Id == -1 && e->Records is not null)
        {
            Volatile.Write(ref e->Id, h.Id);
        }
    }

    /// <summary>Whether a lease of <paramref name="h"/> is out, or a get or put on it is in progress. Run after the
    /// entry was hidden and a process-wide barrier (<see cref="ObjectHandle"/>).</summary>
    public static bool AnyLeaseOf(ObjectHandle h)
    {
        var t = Tables;
        int index = HandleId.Index(h.Id);
        int high = Volatile.Read(ref t->LeaseHighWater);
        for (int i = 0; i < high; i++)
        {
            FastLease* l = t->Leases + i;
            if (Volatile.Read(ref l->State) != LeaseFree && Volatile.Read(ref l->Object) == index)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether <paramref name="id"/> names a lease index (whatever its state).</summary>
    public static bool IsLeaseId(int id) => id >= 0 && HandleId.Index(id) >= LeaseBase;

    /// <summary>Whether <paramref name="id"/> is a lease that is out now.</summary>
    public static bool IsLiveLease(int id) =>
        IsLeaseId(id) && Volatile.Read(ref Tables->Leases[HandleId.Index(id) - LeaseBase].State) == id;

    private static FastObjectEntry* EntryFor(int index, bool create)
    {
        var t = Tables;
        ref nint chunkRef = ref *(nint*)(t->EntryChunks + (index >> HandleId.ChunkBits));
        var chunk = (FastObjectEntry*)Volatile.Read(ref chunkRef);
        if (chunk is null)
        {
            if (!create)
            {
                return null;
            }

            lock (s_gate)
            {
                chunk = (FastObjectEntry*)chunkRef;
                if (chunk is null)
                {
                    chunk = (FastObjectEntry*)NativeMemory.AlignedAlloc((nuint)(HandleId.ChunkSize * EntrySize), 64);
                    NativeMemory.Clear(chunk, (nuint)(HandleId.ChunkSize * EntrySize));
                    for (int i = 0; i < HandleId.ChunkSize; i++)
                    {
                        chunk[i].Id = -1; // 0 is a valid id: an entry never published must not match it
                    }

                    Volatile.Write(ref chunkRef, (nint)chunk); // release: the -1s are visible with the chunk
                }
            }
        }

        return chunk + (index & (HandleId.ChunkSize - 1));
    }
}

/// <summary><c>struct ss_tables</c> (see <see cref="FastPath"/>).</summary>
[StructLayout(LayoutKind.Explicit, Size = FastPath.TablesSize)]
internal unsafe struct FastTables
{
    [FieldOffset(0)]
    public FastObjectEntry** EntryChunks;

    [FieldOffset(8)]
    public FastLease* Leases;

    [FieldOffset(16)]
    public int LeaseHighWater;
}

/// <summary><c>struct ss_object_entry</c> (see <see cref="FastPath"/>).</summary>
[StructLayout(LayoutKind.Explicit, Size = FastPath.EntrySize)]
internal unsafe struct FastObjectEntry
{
    [FieldOffset(0)]
    public int Id;

    [FieldOffset(4)]
    public int Slot;

    [FieldOffset(8)]
    public byte* Data;

    [FieldOffset(16)]
    public byte* Records;

    [FieldOffset(24)]
    public ulong Size;

    [FieldOffset(32)]
    public int* Lost;

    [FieldOffset(40)]
    public int RecordSize;

    [FieldOffset(44)]
    public int BlockShift;

    [FieldOffset(48)]
    public int* Closed;
}

/// <summary><c>struct ss_lease</c> (see <see cref="FastPath"/>).</summary>
[StructLayout(LayoutKind.Explicit, Size = FastPath.LeaseSize)]
internal unsafe struct FastLease
{
    [FieldOffset(0)]
    public int State;

    [FieldOffset(4)]
    public int Generation;

    [FieldOffset(8)]
    public int Object;

    [FieldOffset(12)]
    public int Slot;

    [FieldOffset(16)]
    public byte* First;

    [FieldOffset(24)]
    public int Count;

    [FieldOffset(28)]
    public int RecordSize;
}
