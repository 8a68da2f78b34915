using System.Diagnostics;
using System.Globalization;
using SharedStore.Regions;

namespace SharedStore.TestClient;

/// <summary>
/// Commands that forge and inspect a joined object's block lock records directly in the mapped lock memfd, as a
/// hostile member can (every member maps it read-write: docs/ARCHITECTURE.md §2), and that time a write or a get.
/// <list type="bullet">
/// <item><c>forge OBJ BLOCK reader SLOT COUNT</c>: sets slot SLOT's read count to COUNT (the other bytes stay) and
/// its line's ReaderLines bit, so writers see it</item>
/// <item><c>forge OBJ BLOCK owner VALUE</c>: stores VALUE (decimal or 0x hex) into Owner</item>
/// <item><c>forge OBJ BLOCK waiting SLOT</c>: sets slot SLOT's wait flag and its line's Waiting bit</item>
/// <item><c>lockword OBJ BLOCK</c> → <c>ok readers=R0,…,Rn owner=0x… waiting=0x… lines=0x… flags=0x…</c> (hex words,
/// every reader word of the record)</item>
/// <item><c>timed-write OBJ OFFSET SIZE BYTE TIMEOUTMS</c> → <c>ok ELAPSEDMS</c>: a write of SIZE bytes of BYTE</item>
/// <item><c>timed-get OBJ OFFSET SIZE TIMEOUTMS</c> → <c>ok ELAPSEDMS torn=0|1</c>: a get, put at once</item>
/// </list>
/// Every forged store is a plain interlocked store or OR, the way any process with the mapping can write.
/// </summary>
internal sealed unsafe class LockCommands(Commands commands)
{
    /// <summary>Runs a lock command; null when <paramref name="a"/> is not one.</summary>
    public string? Execute(string[] a)
    {
        switch (a[0])
        {
            case "forge":
            {
                BlockLockRecord* rec = Record(a[1], a[2]);
                switch (a[3])
                {
                    case "reader":
                    {
                        int slot = Commands.I(a[4]);
                        ulong count = ulong.Parse(a[5], CultureInfo.InvariantCulture) & BlockLockDescriptor.MaxHoldsPerSlot;
                        SetByte(rec, slot, BlockLockDescriptor.MaxHoldsPerSlot, count);
                        Interlocked.Or(ref rec->ReaderLines, 1UL << (slot >> 6));
                        return "ok";
                    }

                    case "owner":
                        Interlocked.Exchange(ref rec->Owner, Parse(a[4]));
                        return "ok";
                    case "waiting":
                    {
                        int slot = Commands.I(a[4]);
                        SetByte(rec, slot, BlockLockDescriptor.SlotWaitFlag, BlockLockDescriptor.SlotWaitFlag);
                        Interlocked.Or(ref rec->Waiting, 1UL << (slot >> 6));
                        return "ok";
                    }

                    default:
                        throw new NotSupportedException($"unknown lock field '{a[3]}'");
                }
            }

            case "lockword":
            {
                BlockLockRecord* rec = Record(a[1], a[2]);
                var readers = new string[commands.Obj(a[1]).LockLines * BlockLockDescriptor.WordsPerLine];
                ulong* words = (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset);
                for (int w = 0; w < readers.Length; w++)
                {
                    readers[w] = Volatile.Read(ref words[w]).ToString("x", CultureInfo.InvariantCulture);
                }

                return $"ok readers={string.Join(',', readers)} owner=0x{Volatile.Read(ref rec->Owner):x} waiting=0x{Volatile.Read(ref rec->Waiting):x} lines=0x{Volatile.Read(ref rec->ReaderLines):x} flags=0x{Volatile.Read(ref rec->Flags):x}";
            }

            case "timed-write":
            {
                byte[] data = new byte[Commands.I(a[3])];
                data.AsSpan().Fill((byte)Commands.I(a[4]));
                var sw = Stopwatch.StartNew();
                commands.Obj(a[1]).Write(Commands.L(a[2]), data, Commands.Ms(a[5]));
                return $"ok {sw.ElapsedMilliseconds}";
            }

            case "timed-get":
            {
                var sw = Stopwatch.StartNew();
                using var lease = commands.Obj(a[1]).Get(Commands.L(a[2]), Commands.L(a[3]), Commands.Ms(a[4]));
                long ms = sw.ElapsedMilliseconds;
                return $"ok {ms} torn={(lease.Torn ? 1 : 0)}";
            }

            default:
                return null;
        }
    }

    private BlockLockRecord* Record(string obj, string block)
    {
        var o = commands.Obj(obj);
        long b = Commands.L(block);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(b, o.BlockCount);
        return o.LockRecord(b);
    }

    /// <summary>Replaces the bits <paramref name="mask"/> of slot <paramref name="slot"/>'s byte with
    /// <paramref name="value"/> (CAS on its word: the neighbours' bytes stay).</summary>
    private static void SetByte(BlockLockRecord* rec, int slot, ulong mask, ulong value)
    {
        ulong* word = (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset) + (slot >> 3);
        int shift = (slot & 7) << 3;
        ulong old;
        do
        {
            old = Volatile.Read(ref *word);
        }
        while (Interlocked.CompareExchange(ref *word, (old & ~(mask << shift)) | (value << shift), old) != old);
    }

    private static uint Parse(string s) => s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
        ? uint.Parse(s.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
        : uint.Parse(s, CultureInfo.InvariantCulture);
}
