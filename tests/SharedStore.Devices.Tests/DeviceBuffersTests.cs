using System.Runtime.Versioning;
using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>The contract of <see cref="DeviceBuffers"/>: layout, renting, misuse, and the physical contiguity that
/// large direct transfers depend on.</summary>
[TestFixture]
[Category("Devices")]
[SupportedOSPlatform("linux")]
public sealed class DeviceBuffersTests
{
    [Test]
    public void DeviceBuffers_Create_BuffersAreAlignedInsideOneHugePageAlignedRange()
    {
        // Contract: the pool starts on a 2 MiB boundary; buffers are 4096-aligned, Stride apart, inside Length.
        using var pool = new DeviceBuffers(100_000, 5);

        Assert.That((long)pool.BaseAddress % DeviceBuffers.HugePageSize, Is.Zero);
        Assert.That(pool.Stride, Is.EqualTo(102_400)); // 100 000 rounded up to 4096
        Assert.That(pool.Length, Is.EqualTo(5L * 102_400));
        for (int i = 0; i < pool.Count; i++)
        {
            Assert.That((long)pool[i], Is.EqualTo((long)pool.BaseAddress + ((long)i * pool.Stride)));
            Assert.That((long)pool[i] % 4096, Is.Zero);
            Assert.That(pool.Contains(pool[i], pool.BufferSize), Is.True);
            Assert.That(pool.GetSpan(i).Length, Is.EqualTo(100_000));
        }

        Assert.That(pool.Contains(pool.BaseAddress - 1, 1), Is.False);
        Assert.That(pool.Contains(pool.BaseAddress + (nint)pool.Length, 1), Is.False);
        Assert.That(pool.HugePageBytes, Is.GreaterThanOrEqualTo(-1));
    }

    [Test]
    public void DeviceBuffers_RentAll_NextRentIsAnOutcomeNotAnException()
    {
        // Contract: TryRent hands out each buffer once and answers false when none is free; Return makes one free.
        using var pool = new DeviceBuffers(4096, 3);
        var rented = new HashSet<int>();
        for (int i = 0; i < 3; i++)
        {
            Assert.That(pool.TryRent(out int k), Is.True);
            rented.Add(k);
        }

        Assert.That(rented, Is.EquivalentTo(new[] { 0, 1, 2 }));
        Assert.That(pool.TryRent(out int none), Is.False);
        Assert.That(none, Is.EqualTo(-1));
        Assert.That(pool.Available, Is.Zero);
        pool.Return(1);
        Assert.That(pool.TryRent(out int again), Is.True);
        Assert.That(again, Is.EqualTo(1));
    }

    [Test]
    public void DeviceBuffers_Misuse_Throws()
    {
        // Contract: bad sizes, a buffer returned twice or never rented, an index out of range and use after Dispose
        // throw; Dispose is idempotent.
        Assert.That(() => new DeviceBuffers(0, 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new DeviceBuffers(4096, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new DeviceBuffers(1 << 30, 2), Throws.InstanceOf<ArgumentOutOfRangeException>());
        var pool = new DeviceBuffers(4096, 2);
        Assert.That(() => pool.Return(0), Throws.InvalidOperationException);
        Assert.That(pool.TryRent(out int k), Is.True);
        pool.Return(k);
        Assert.That(() => pool.Return(k), Throws.InvalidOperationException);
        Assert.That(() => pool[2], Throws.InstanceOf<ArgumentOutOfRangeException>());
        pool.Dispose();
        Assert.That(() => pool.Dispose(), Throws.Nothing);
        Assert.That(() => pool[0], Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(() => pool.TryRent(out _), Throws.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void DeviceBuffers_HugePagesGranted_EachMegabyteBufferIsOnePhysicalRun()
    {
        // Contract: what the pool is for. Where the kernel grants huge pages, a 1 MiB buffer is one physically
        // contiguous run, i.e. one DMA segment (against about 256 for NativeMemory.AlignedAlloc here, which the
        // virtio disk's limit of 254 segments splits into two requests). Needs root for the frame numbers in
        // /proc/self/pagemap.
        if (Environment.UserName != "root")
        {
            Assert.Ignore("reading physical frame numbers from /proc/self/pagemap needs root");
        }

        using var pool = new DeviceBuffers(1 << 20, 4);
        if (pool.HugePageBytes <= 0)
        {
            Assert.Ignore($"the kernel gave no huge pages (THP {File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Trim()})");
        }

        Assert.That(pool.HugePageBytes, Is.EqualTo(4L << 20));
        for (int i = 0; i < pool.Count; i++)
        {
            Assert.That(DeviceBuffers.PhysicalRuns(pool[i], pool.BufferSize), Is.EqualTo(1), $"buffer {i}");
        }
    }
}
