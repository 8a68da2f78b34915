using System.Runtime.InteropServices;
using SharedStore.Native.Handles;
using SharedStore.Regions;

namespace SharedStore.Native.Tests;

/// <summary>
/// Pins native/fastpath.h (compiled into libsharedstore.so's C get/put path) against the C# descriptors it mirrors:
/// the lock record words a reader touches (<see cref="BlockLockDescriptor"/>, lock layout 3), the operation id layout
/// (<see cref="HandleId"/>) and the tables shared with the managed half (<see cref="FastPath"/>). A C program compiled
/// with the header prints its values; a change on one side only fails here.
/// </summary>
[TestFixture]
public sealed class FastPathLayoutTests
{
    [Test]
    public void Header_MatchesTheManagedDescriptors()
    {
        var r = NativeLibrary.Run([NativeLibrary.Program("fastpath_layout")], null, TimeSpan.FromSeconds(30));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var c = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .ToDictionary(p => p[0], p => long.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));

        var expected = new Dictionary<string, long>
        {
            ["rec.owner"] = BlockLockDescriptor.OwnerOffset,
            ["rec.waiting"] = BlockLockDescriptor.WaitingOffset,
            ["rec.seq"] = BlockLockDescriptor.SeqOffset,
            ["rec.reader_lines"] = BlockLockDescriptor.ReaderLinesOffset,
            ["rec.readers"] = BlockLockDescriptor.ReadersOffset,
            ["owner.active"] = BlockLockDescriptor.OwnerActiveBit,
            ["max_holds"] = BlockLockDescriptor.MaxHoldsPerSlot,
            ["seq.sleepers"] = BlockLockDescriptor.SeqSleepersBit,
            ["id.index_bits"] = HandleId.IndexBits,
            ["id.generation_mask"] = HandleId.GenerationMask,
            ["lease.base"] = FastPath.LeaseBase,
            ["lease.capacity"] = FastPath.LeaseCapacity,
            ["lease.free"] = FastPath.LeaseFree,
            ["lease.announced"] = FastPath.LeaseAnnounced,
            ["lease.putting"] = FastPath.LeasePutting,
            ["entry.chunk_bits"] = HandleId.ChunkBits,
            ["entry.size"] = Marshal.SizeOf<FastObjectEntry>(),
            ["entry.id"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Id)),
            ["entry.slot"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Slot)),
            ["entry.data"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Data)),
            ["entry.records"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Records)),
            ["entry.size_field"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Size)),
            ["entry.lost"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Lost)),
            ["entry.record_size"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.RecordSize)),
            ["entry.block_shift"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.BlockShift)),
            ["entry.closed"] = Offset<FastObjectEntry>(nameof(FastObjectEntry.Closed)),
            ["lease.size"] = Marshal.SizeOf<FastLease>(),
            ["lease.state"] = Offset<FastLease>(nameof(FastLease.State)),
            ["lease.generation"] = Offset<FastLease>(nameof(FastLease.Generation)),
            ["lease.object"] = Offset<FastLease>(nameof(FastLease.Object)),
            ["lease.slot"] = Offset<FastLease>(nameof(FastLease.Slot)),
            ["lease.first"] = Offset<FastLease>(nameof(FastLease.First)),
            ["lease.count"] = Offset<FastLease>(nameof(FastLease.Count)),
            ["lease.record_size"] = Offset<FastLease>(nameof(FastLease.RecordSize)),
            ["tables.size"] = Marshal.SizeOf<FastTables>(),
            ["tables.entry_chunks"] = Offset<FastTables>(nameof(FastTables.EntryChunks)),
            ["tables.leases"] = Offset<FastTables>(nameof(FastTables.Leases)),
            ["tables.lease_high_water"] = Offset<FastTables>(nameof(FastTables.LeaseHighWater)),
        };

        Assert.That(c.Keys, Is.EquivalentTo(expected.Keys), "the program prints exactly the values this test knows");
        Assert.Multiple(() =>
        {
            foreach (var (name, value) in expected)
            {
                Assert.That(c[name], Is.EqualTo(value), name);
            }
        });
    }

    private static long Offset<T>(string field) => (long)Marshal.OffsetOf<T>(field);
}
