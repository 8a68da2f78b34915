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
}
