using System.Runtime.CompilerServices;
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
internal readonly unsafe struct BlockLockSnapshot
{
    private readonly Readers _readers;

    private BlockLockSnapshot(BlockLockRecord* rec)
    {
        // The order of the old DescribeBlock: writer side first, then readers, flags last.
        Owner = Volatile.Read(ref rec->Owner);
        WaitingSlots = Volatile.Read(ref rec->Waiting);
        ulong* words = (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset);
        Readers readers = default;
        for (int w = 0; w < BlockLockDescriptor.ReaderWords; w++)
        {
            readers[w] = Volatile.Read(ref words[w]);
        }

        _readers = readers;
        Flags = Volatile.Read(ref rec->Flags);
    }

    /// <summary>Reads <paramref name="rec"/> once.</summary>
    public static BlockLockSnapshot Take(BlockLockRecord* rec) => new(rec);

    /// <summary>The raw Owner word: 0 when no writer holds or claims the block.</summary>
    public uint Owner { get; }

    /// <summary>The slot named by <see cref="Owner"/> (its field minus one): -1 when the field is 0, and possibly
    /// above <see cref="BlockLockDescriptor.MaxSlots"/> for a forged word.</summary>
    public int OwnerSlot => (int)(Owner & BlockLockDescriptor.OwnerSlotMask) - 1;

    /// <summary>The owner drained the readers and is writing (else the claim is pending).</summary>
    public bool OwnerActive => (Owner & BlockLockDescriptor.OwnerActiveBit) != 0;

    /// <summary>Bit s: slot s has a thread waiting to write.</summary>
    public ulong WaitingSlots { get; }

    /// <summary>The raw Flags word.</summary>
    public uint Flags { get; }

    public bool Torn => (Flags & BlockLockDescriptor.FlagTorn) != 0;

    public bool Dirty => (Flags & BlockLockDescriptor.FlagDirty) != 0;

    /// <summary>The reads slot <paramref name="slot"/> holds (its reader byte).</summary>
    public int ReadHolds(int slot) => (int)((_readers[slot >> 3] >> ((slot & 7) << 3)) & 0xFF);

    /// <summary>Bit s: slot s holds at least one read.</summary>
    public ulong ReaderSlots
    {
        get
        {
            ulong mask = 0;
            for (int slot = 0; slot < BlockLockDescriptor.MaxSlots; slot++)
            {
                if (ReadHolds(slot) != 0)
                {
                    mask |= 1UL << slot;
                }
            }

            return mask;
        }
    }

    /// <summary>Nobody holds the block, claims it or waits to write it (whatever its flags say).</summary>
    public bool Unheld => Owner == 0 && WaitingSlots == 0 && ReaderSlots == 0;

    [InlineArray(BlockLockDescriptor.ReaderWords)]
    private struct Readers
    {
        private ulong _word;
    }
}
