using SharedStore.Broker;

namespace SharedStore.Core.Tests;

[TestFixture]
public class RangeAllocatorTests
{
    [Test]
    public void AllocateFree_CoalescesAndReuses()
    {
        var a = new RangeAllocator(1 << 20);
        long x = a.Allocate(1000, 64), y = a.Allocate(5000, 4096), z = a.Allocate(100, 64);
        Assert.That(x, Is.EqualTo(0));
        Assert.That(y % 4096, Is.Zero);
        Assert.That(z >= x + 1000 && (z + 100 <= y || z >= y + 5000), Is.True, "no overlap (first fit may use the alignment gap)");
        a.Free(y, 5000);
        a.Free(x, 1000);
        a.Free(z, 100);
        Assert.That(a.Allocate(1 << 20, 64), Is.EqualTo(0), "all frees coalesced back into one range");
        Assert.That(a.Allocate(1, 1), Is.EqualTo(-1));
    }

    [Test]
    public void Free_TenThousandRangesInRandomOrder_CoalesceIntoOneRange()
    {
        // Issue 16: a free finds the range ending at its offset through the by-end table (it used to walk every hole,
        // which made freeing 100 000 objects out of address order quadratic). Whatever the order, each free merges
        // with both free neighbours: the holes never outnumber the allocated ranges plus one, and at the end one
        // range holds everything again.
        const int n = 10_000;
        var a = new RangeAllocator(n * 1024L);
        long[] offsets = [.. Enumerable.Range(0, n).Select(_ => a.Allocate(1024, 64))];
        Assert.That(offsets, Is.Ordered.And.All.GreaterThanOrEqualTo(0));
        Assert.That(a.HoleCount, Is.Zero, "full");
        var order = Enumerable.Range(0, n).ToArray();
        new Random(16).Shuffle(order);
        int freed = 0;
        foreach (int i in order)
        {
            a.Free(offsets[i], 1024);
            freed++;
            Assert.That(a.HoleCount, Is.LessThanOrEqualTo(Math.Min(freed, n - freed + 1)));
        }

        Assert.That(a.HoleCount, Is.EqualTo(1));
        Assert.That(a.Allocate(n * 1024L, 4096), Is.EqualTo(0), "one range of the whole capacity");
    }
}
