using System.Diagnostics;
using System.Runtime.CompilerServices;
using SharedStore.Locks;

namespace SharedStore.Regions;

/// <summary>
/// One process's view of one object in a mapped segment: where the object's bytes and its block lock records are in
/// this process, how blocks divide it, the lock slot this process takes them with, and what that slot's locks need in
/// the process: for a member's slot the per-block counts of this view's threads waiting to write and the gate that
/// serializes them (<see cref="BlockLock.AcquireWrite(BlockLockRecord*, int, object, ref int, ref LockWait)"/>); for
/// the broker's slot its ledger (<see cref="ISlotLedger"/>), which keeps those counts itself. A client's
/// <c>SharedObject</c> and the broker's asynchronous target and durable write-back each see an object through one;
/// <see cref="BlockRange"/> takes its blocks.
/// <para><b>Lifetime.</b> The view holds a SafeHandle reference (<c>DangerousAddRef</c>) on both mappings, the data
/// and the lock records, from its constructor until it is released: by <see cref="Dispose"/>, and by every holder of a
/// <see cref="TryAddRef"/> (an operation whose raw pointers outlive the call that started it, such as an aread in
/// flight on a device scheduler). Disposing a <see cref="MappedRegion"/> while a view still holds it only marks it
/// closed; the munmap happens at the view's last release. So the view's pointers, and what is derived from them while
/// a reference is held, cannot outlive the mapping. After the last release they must not be used; a client's put of a
/// lease after its handle was closed relies on the container's own reference on the segment, which
/// it checks (<c>Container.IsClosed</c>).</para>
/// </summary>
internal sealed unsafe class ObjectView : IDisposable
{
    private readonly MappedRegion _dataMap;
    private readonly MappedRegion _lockMap;
    private readonly int[]? _localWaiters; // member slots only: this view's threads waiting to write, per block
    private int _refs = 1;                 // the owner's (dropped by Dispose) and one per TryAddRef
    private int _disposed;

    /// <summary>Views <paramref name="size"/> bytes at <paramref name="dataOffset"/> of <paramref name="data"/>, whose
    /// lock records start at byte <paramref name="lockOffset"/> of <paramref name="locks"/>, and adds a reference to
    /// both mappings.</summary>
    /// <param name="name">The object's name, for messages.</param>
    /// <param name="data">The mapping of the object's data memfd.</param>
    /// <param name="dataOffset">Byte offset of the object's byte 0 in <paramref name="data"/>.</param>
    /// <param name="locks">The mapping of the segment's lock memfd.</param>
    /// <param name="lockOffset">Byte offset of the object's first lock record in <paramref name="locks"/>.</param>
    /// <param name="lines">Reader lines of each record (the container's; records are
    /// <see cref="BlockLockDescriptor.RecordSize"/> of it apart).</param>
    /// <param name="size">Bytes of object data.</param>
    /// <param name="blockShift">log2 of the container's block size.</param>
    /// <param name="slot">The lock slot this process holds the container's blocks with.</param>
    /// <param name="durable">The container is durable: every write release marks its blocks dirty for write-back.</param>
    /// <param name="repair">Asked to check a block that a wait through this view has waited on for the repair interval;
    /// null: never ask.</param>
    /// <param name="ledger">Records the slot's holds (the broker's slot); null for a member's slot.</param>
    /// <exception cref="SharedStoreException">Internal: the object lies outside its mappings (nothing is referenced).</exception>
    /// <exception cref="ObjectDisposedException">A mapping was already disposed.</exception>
    public ObjectView(string name, MappedRegion data, long dataOffset, MappedRegion locks, long lockOffset, int lines, long size, int blockShift, int slot, bool durable, ILockRepairRequester? repair, ISlotLedger? ledger = null)
    {
        long blockCount = (size + (1L << blockShift) - 1) >> blockShift;
        if (lines is < 1 or > BlockLockDescriptor.MaxLines)
        {
            throw new SharedStoreException(ErrorCode.Internal, $"object '{name}': {lines} reader lines per lock record");
        }

        int recordSize = BlockLockDescriptor.RecordSize(lines);
        if (dataOffset < 0 || size < 0 || dataOffset + size > data.Length
            || lockOffset < 0 || lockOffset + (blockCount * recordSize) > locks.Length)
        {
            throw new SharedStoreException(ErrorCode.Internal, $"object '{name}' lies outside its segment");
        }

        bool dataAdded = false, locksAdded = false;
        try
        {
            data.DangerousAddRef(ref dataAdded);
            locks.DangerousAddRef(ref locksAdded);
        }
        catch
        {
            if (dataAdded)
            {
                data.DangerousRelease();
            }

            throw;
        }

        _dataMap = data;
        _lockMap = locks;
        Name = name;
        Data = data.Pointer + dataOffset;
        Locks = (BlockLockRecord*)(locks.Pointer + lockOffset);
        Lines = lines;
        RecordSize = recordSize;
        Size = size;
        BlockShift = blockShift;
        BlockCount = blockCount;
        Slot = slot;
        Durable = durable;
        Repair = repair;
        Ledger = ledger;
        if (ledger is null)
        {
            _localWaiters = new int[blockCount];
        }
    }

    public string Name { get; }

    /// <summary>The object's byte 0 in this process.</summary>
    public byte* Data { get; }

    /// <summary>The lock record of block 0 (it also holds the object's version word); block b's is <see cref="Record"/>.</summary>
    public BlockLockRecord* Locks { get; }

    /// <summary>Reader lines of each record.</summary>
    public int Lines { get; }

    /// <summary>Bytes from one block's record to the next.</summary>
    public int RecordSize { get; }

    /// <summary>The lock record of block <paramref name="block"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BlockLockRecord* Record(long block) => (BlockLockRecord*)((byte*)Locks + (block * RecordSize));

    public long Size { get; }

    public int BlockShift { get; }

    public long BlockCount { get; }

    /// <summary>The lock slot this process takes the blocks with.</summary>
    public int Slot { get; }

    /// <summary>Write releases mark blocks dirty (durable container).</summary>
    public bool Durable { get; }

    /// <summary>Asked to check a block a wait through this view has waited on for the repair interval, or null.</summary>
    public ILockRepairRequester? Repair { get; }

    /// <summary>The slot's ledger (the broker's slot), or null (a member's slot: <see cref="LocalWaiters"/>).</summary>
    public ISlotLedger? Ledger { get; }

    /// <summary>The gate of <see cref="LocalWaiters"/> (member slots).</summary>
    internal object WaitGate { get; } = new();

    /// <summary>This view's threads waiting to write block <paramref name="block"/> (member slots only).</summary>
    internal ref int LocalWaiters(long block) => ref _localWaiters![block];

    /// <summary>The blocks of [offset, offset+length) (none when length is 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BlockRange Range(long offset, long length)
    {
        long first = offset >> BlockShift;
        return new BlockRange(this, first, length == 0 ? first - 1 : (offset + length - 1) >> BlockShift); // the seed's end index is one too many on a boundary
    }

    /// <summary>Block <paramref name="block"/> alone.</summary>
    public BlockRange Block(long block) => new(this, block, block);

    /// <summary>Every block of the object.</summary>
    public BlockRange All => new(this, 0, BlockCount - 1);

    /// <summary>The block whose record is <paramref name="rec"/>.</summary>
    public long BlockOf(BlockLockRecord* rec) => ((byte*)rec - (byte*)Locks) / RecordSize;

    /// <summary>A new lock wait through this view: <paramref name="timeout"/> and <paramref name="token"/> bound the
    /// whole call, and long waits ask <see cref="Repair"/> to check their block.</summary>
    public LockWait Wait(LockWaitPolicy policy, TimeSpan timeout, CancellationToken token) => new(policy, timeout, token, Repair);

    /// <summary>Adds a reference for an operation whose pointers outlive the call that started it; false once the
    /// view was released for good (then nothing was added). Pair with <see cref="Release"/>.</summary>
    public bool TryAddRef()
    {
        while (true)
        {
            int r = Volatile.Read(ref _refs);
            if (r == 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _refs, r + 1, r) == r)
            {
                return true;
            }
        }
    }

    /// <summary>Drops a reference of <see cref="TryAddRef"/>; the last one releases the mappings.</summary>
    public void Release()
    {
        int r = Interlocked.Decrement(ref _refs);
        Debug.Assert(r >= 0, "a view released more often than referenced");
        if (r == 0)
        {
            _lockMap.DangerousRelease();
            _dataMap.DangerousRelease();
        }
    }

    /// <summary>Drops the owner's reference (idempotent): the mappings are released now, or by the last operation
    /// that still holds a reference.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Release();
        }
    }
}
