using System.Runtime.InteropServices;
using SharedStore.Regions;

namespace SharedStore.Core.Tests;

/// <summary>Block lock records in process memory for state-level tests, and direct access to their reader bytes (as a
/// forger with the mapping has).</summary>
internal static unsafe class TestRecords
{
    /// <summary>A zeroed record of <paramref name="lines"/> reader lines, 64-byte aligned.</summary>
    public static BlockLockRecord* Allocate(int lines)
    {
        nuint size = (nuint)BlockLockDescriptor.RecordSize(lines);
        var rec = (BlockLockRecord*)NativeMemory.AlignedAlloc(size, 64);
        NativeMemory.Clear(rec, size);
        return rec;
    }

    public static void Free(BlockLockRecord* rec) => NativeMemory.AlignedFree(rec);

    /// <summary>Reader word <paramref name="w"/> (slots 8w … 8w+7).</summary>
    public static ref ulong Word(BlockLockRecord* rec, int w) => ref ((ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset))[w];

    /// <summary>Slot <paramref name="slot"/>'s whole byte (count and wait flag).</summary>
    public static uint Byte(BlockLockRecord* rec, int slot) => (uint)(Volatile.Read(ref Word(rec, slot >> 3)) >> ((slot & 7) << 3)) & 0xFF;

    /// <summary>Adds <paramref name="delta"/> to slot <paramref name="slot"/>'s count (atomically), without announcing
    /// its line.</summary>
    public static void AddToByte(BlockLockRecord* rec, int slot, int delta) =>
        Interlocked.Add(ref Word(rec, slot >> 3), (ulong)(long)delta << ((slot & 7) << 3));

    /// <summary>Sets slot <paramref name="slot"/>'s wait flag and its line's Waiting bit, as a waiting writer does.</summary>
    public static void ForgeWaiting(BlockLockRecord* rec, int slot)
    {
        Interlocked.Or(ref Word(rec, slot >> 3), (ulong)BlockLockDescriptor.SlotWaitFlag << ((slot & 7) << 3));
        Interlocked.Or(ref rec->Waiting, 1UL << (slot >> 6));
    }

    /// <summary>Sets slot <paramref name="slot"/>'s count to <paramref name="count"/> and announces its line, as a
    /// reader (or a forger) does.</summary>
    public static void ForgeReads(BlockLockRecord* rec, int slot, int count)
    {
        int shift = (slot & 7) << 3;
        ulong old;
        do
        {
            old = Volatile.Read(ref Word(rec, slot >> 3));
        }
        while (Interlocked.CompareExchange(ref Word(rec, slot >> 3), (old & ~((ulong)BlockLockDescriptor.MaxHoldsPerSlot << shift)) | ((ulong)count << shift), old) != old);
        Interlocked.Or(ref rec->ReaderLines, 1UL << (slot >> 6));
    }

    /// <summary>The slots whose byte is not zero, ascending.</summary>
    public static int[] NonZeroBytes(BlockLockRecord* rec, int lines) =>
        Enumerable.Range(0, lines * BlockLockDescriptor.SlotsPerLine).Where(s => Byte(rec, s) != 0).ToArray();
}
