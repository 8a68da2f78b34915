using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>
/// One look at a block's lock record (<see cref="BlockLockDescriptor"/>), decoded: each slot's read holds, the Owner
/// (its slot and whether the write is active), the slots waiting to write, and the Torn and Dirty flags. Code outside
/// <c>Locks/</c> and <c>Regions/</c> that wants to know what a record says asks this type (the broker's
/// <c>holders</c> reply is built from it) instead of decoding the words itself.
/// <para><b>A report, not a judgement.</b> The words are read one after another (Owner, Waiting, the eight reader
/// words, Flags), each with a volatile read, while other processes change them: the snapshot
/// is not one instant of the record, and a hold that moves between two reads can show twice or not at all. Nothing
/// may be decided from it. Taking and releasing locks read the live words (<see cref="BlockLock"/>), and the repair
/// changes a word only by a CAS from the value it judged (<see cref="BlockLock.ClearUnowned"/>).</para>
/// </summary>
internal sealed unsafe class BlockLockSnapshot
{
    private readonly ulong[] _readers;

    private BlockLockSnapshot(BlockLockRecord* rec, int lines)
    {
        // The order of the old DescribeBlock: writer side first, then readers, flags last.
        Owner = Volatile.Read(ref rec->Owner);
        WaitingLines = Volatile.Read(ref rec->Waiting);
        ReaderLines = Volatile.Read(ref rec->ReaderLines);
        ulong* words = (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset);
        _readers = new ulong[lines * BlockLockDescriptor.WordsPerLine];
        for (int w = 0; w < _readers.Length; w++)
        {
            _readers[w] = Volatile.Read(ref words[w]);
        }

        Flags = Volatile.Read(ref rec->Flags);
    }

    /// <summary>Reads <paramref name="rec"/>, a record of <paramref name="lines"/> reader lines, once.</summary>
    public static BlockLockSnapshot Take(BlockLockRecord* rec, int lines) => new(rec, lines);

    /// <summary>The raw Owner word: 0 when no writer holds or claims the block.</summary>
    public uint Owner { get; }

    /// <summary>The slot named by <see cref="Owner"/> (its field minus one): -1 when the field is 0, and possibly
    /// beyond the record's slots for a forged word.</summary>
    public int OwnerSlot => (int)(Owner & BlockLockDescriptor.OwnerSlotMask) - 1;

    /// <summary>The owner drained the readers and is writing (else the claim is pending).</summary>
    public bool OwnerActive => (Owner & BlockLockDescriptor.OwnerActiveBit) != 0;

    /// <summary>The raw Waiting word: bit g, a slot of reader line g may wait to write.</summary>
    public ulong WaitingLines { get; }

    /// <summary>The raw ReaderLines word: bit g, reader line g may hold reads.</summary>
    public ulong ReaderLines { get; }

    /// <summary>The raw Flags word.</summary>
    public uint Flags { get; }

    public bool Torn => (Flags & BlockLockDescriptor.FlagTorn) != 0;

    public bool Dirty => (Flags & BlockLockDescriptor.FlagDirty) != 0;

    /// <summary>The reads slot <paramref name="slot"/> holds (the count of its byte).</summary>
    public int ReadHolds(int slot) => (int)(Byte(slot) & BlockLockDescriptor.MaxHoldsPerSlot);

    /// <summary>Slot <paramref name="slot"/> has a thread waiting to write (its byte's flag).</summary>
    public bool Waits(int slot) => (Byte(slot) & BlockLockDescriptor.SlotWaitFlag) != 0;

    private uint Byte(int slot) => (uint)slot < (uint)(_readers.Length << 3) ? (uint)(_readers[slot >> 3] >> ((slot & 7) << 3)) & 0xFF : 0;

    /// <summary>Slots holding at least one read, ascending.</summary>
    public IEnumerable<int> ReaderSlots => Enumerable.Range(0, _readers.Length << 3).Where(s => ReadHolds(s) != 0);

    /// <summary>Slots with a thread waiting to write, ascending.</summary>
    public IEnumerable<int> WaitingSlots => Enumerable.Range(0, _readers.Length << 3).Where(Waits);

    /// <summary>Nobody holds the block, claims it or waits to write it (whatever its flags say).</summary>
    public bool Unheld => Owner == 0 && WaitingLines == 0 && _readers.All(w => w == 0);
}
