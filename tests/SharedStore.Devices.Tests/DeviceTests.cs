using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>Management contract of the devices and the factories (no data transfer).</summary>
[TestFixture]
[Category("Devices")]
public sealed class DeviceTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine("/var/tmp", $"sharedstore-devtests-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string FilePath => Path.Combine(_dir, "f.dat");

    [Test]
    public void RandomAccessFileDevice_SetSize_SizeReportsNewLength()
    {
        // Contract: SetSize grows and shrinks; Size reads it back.
        using var d = new RandomAccessFileDevice(FilePath, DeviceMode.Create);

        d.SetSize(12345);
        Assert.That(d.Size, Is.EqualTo(12345));
        d.SetSize(10);
        Assert.That(d.Size, Is.EqualTo(10));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void RandomAccessFileDevice_Flush_Succeeds(bool metadata)
    {
        // Contract: Flush maps to fdatasync (or fsync with metadata) and succeeds on a healthy file.
        using var d = new RandomAccessFileDevice(FilePath, DeviceMode.Create);
        d.SetSize(4096);

        Assert.That(() => d.Flush(metadata), Throws.Nothing);
    }

    [Test]
    public void RandomAccessFileDevice_OpenMissingWithoutCreate_ThrowsDeviceExceptionWithErrno()
    {
        // Contract: open failures name the path and carry the errno (ENOENT = 2).
        var e = Assert.Throws<DeviceException>(() => new RandomAccessFileDevice(FilePath, DeviceMode.None));

        Assert.That(e!.Errno, Is.EqualTo(2));
        Assert.That(e.Message, Does.Contain(FilePath));
    }

    [TestCase(DeviceMode.ReadOnly | DeviceMode.Create)]
    [TestCase(DeviceMode.ReadOnly | DeviceMode.Truncate)]
    [TestCase(DeviceMode.SequentialAccess | DeviceMode.RandomAccess | DeviceMode.Create)]
    public void RandomAccessFileDevice_ContradictoryMode_ThrowsArgumentException(DeviceMode mode)
    {
        // Contract: contradictory flags are misuse, rejected before any system call.
        Assert.That(() => new RandomAccessFileDevice(FilePath, mode), Throws.ArgumentException);
    }

    [TestCase(DeviceMode.SequentialAccess)]
    [TestCase(DeviceMode.RandomAccess)]
    [TestCase(DeviceMode.Direct)]
    [TestCase(DeviceMode.Direct | DeviceMode.RandomAccess)]
    public void RandomAccessFileDevice_OpenWithHints_Succeeds(DeviceMode mode)
    {
        // Contract: access hints (posix_fadvise) and O_DIRECT are accepted on a regular file on the real disk.
        using var d = new RandomAccessFileDevice(FilePath, mode | DeviceMode.Create);

        Assert.That(d.Mode, Is.EqualTo(mode | DeviceMode.Create));
    }

    [Test]
    public void RandomAccessFileDevice_Direct_ReportsPowerOfTwoAlignment()
    {
        // Contract: direct devices report their alignment (statx STATX_DIOALIGN, else 512); buffered ones report 1.
        using var direct = new RandomAccessFileDevice(FilePath, DeviceMode.Create | DeviceMode.Direct);
        using var buffered = new RandomAccessFileDevice(FilePath, DeviceMode.None);

        Assert.That(direct.OffsetAlignment, Is.GreaterThanOrEqualTo(512));
        Assert.That(direct.OffsetAlignment & (direct.OffsetAlignment - 1), Is.Zero);
        Assert.That(direct.MemoryAlignment & (direct.MemoryAlignment - 1), Is.Zero);
        Assert.That(buffered.OffsetAlignment, Is.EqualTo(1));
        Assert.That(buffered.MemoryAlignment, Is.EqualTo(1));
    }

    [Test]
    public void RandomAccessFileDevice_Truncate_EmptiesExistingFile()
    {
        // Contract: Truncate opens an existing file at size zero.
        File.WriteAllBytes(FilePath, new byte[5000]);

        using var d = new RandomAccessFileDevice(FilePath, DeviceMode.Truncate);

        Assert.That(d.Size, Is.Zero);
    }

    [Test]
    public void RandomAccessFileDevice_ReadOnlySetSize_ThrowsDeviceException()
    {
        // Contract: management writes on a read-only device fail with the ReadOnly status.
        File.WriteAllBytes(FilePath, new byte[10]);
        using var d = new RandomAccessFileDevice(FilePath, DeviceMode.ReadOnly);

        var e = Assert.Throws<DeviceException>(() => d.SetSize(100));
        Assert.That(e!.Status, Is.EqualTo(TransferStatus.ReadOnly));
        Assert.That(d.IsReadOnly, Is.True);
    }

    [Test]
    public void RandomAccessDevice_AfterDispose_ManagementThrowsObjectDisposed()
    {
        // Contract: Dispose is idempotent; management calls after it throw ObjectDisposedException.
        var d = new RandomAccessFileDevice(FilePath, DeviceMode.Create);
        d.Dispose();
        d.Dispose();

        Assert.That(d.IsDisposed, Is.True);
        Assert.That(() => d.Size, Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(() => d.Flush(), Throws.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void MemoryRegionDevice_SetSize_ThrowsNotSupported()
    {
        // Contract: a mapped region has a fixed size.
        using var d = new MemoryRegionDevice(0x1000, 4096, owner: null);

        Assert.That(d.Size, Is.EqualTo(4096));
        Assert.That(() => d.SetSize(8192), Throws.InstanceOf<NotSupportedException>());
    }

    [Test]
    public void MemoryRegionDevice_ZeroBase_ThrowsArgumentException()
    {
        // Contract: a null base address is misuse.
        Assert.That(() => new MemoryRegionDevice(0, 4096, owner: null), Throws.ArgumentException);
    }

    [Test]
    public void MemoryRegionDevice_Dispose_ReleasesOwner()
    {
        // Contract: the device roots its owner only while alive.
        var owner = new object();
        var d = new MemoryRegionDevice(0x1000, 4096, owner);
        Assert.That(d.Owner, Is.SameAs(owner));

        d.Dispose();

        Assert.That(d.Owner, Is.Null);
    }

    [Test]
    public void RandomAccessNullDevice_SetSize_ReportsSize()
    {
        // Contract: the null device behaves like a file of its logical size.
        using var d = new RandomAccessNullDevice(100);

        d.SetSize(5000);

        Assert.That(d.Size, Is.EqualTo(5000));
        Assert.That(() => d.SetSize(-1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [TestCase(DeviceKind.File, typeof(RandomAccessFileDevice))]
    [TestCase(DeviceKind.Null, typeof(RandomAccessNullDevice))]
    [TestCase(DeviceKind.MemoryRegion, typeof(MemoryRegionDevice))]
    public void RandomAccessDevices_Create_EachKind_ReturnsMatchingType(DeviceKind kind, Type expected)
    {
        // Contract: the factory is keyed by DeviceKind.
        using RandomAccessDevice d = RandomAccessDevices.Create(kind, new DeviceOptions
        {
            Path = FilePath, Mode = DeviceMode.Create, Size = 4096, BaseAddress = 0x1000,
        });

        Assert.That(d, Is.TypeOf(expected));
    }

    [Test]
    public void RandomAccessDevices_CreateFileWithoutPath_ThrowsArgumentException()
    {
        // Contract: missing required options are misuse.
        Assert.That(() => RandomAccessDevices.Create(DeviceKind.File, new DeviceOptions()), Throws.ArgumentException);
    }

    [Test]
    public void RandomAccessRequest_ByteCount_SumsBindingLengths()
    {
        // Contract: a request's byte count is the sum of its bindings, laid out back to back.
        using var d = new RandomAccessNullDevice();
        var r = new RandomAccessRequest(d, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(0x1000, 100))
            .Add(new RandomAccessRequestBinding(new byte[50]));

        Assert.That(r.ByteCount, Is.EqualTo(150));
    }

    [Test]
    public void DeviceSchedulers_AutoForBufferedMode_FollowsMeasurementAndSaysWhy()
    {
        // Contract: page-cache I/O goes to the scheduler measured faster here (io_uring; docs/DEVICES.md), or to the
        // thread pool with the reason when io_uring is unavailable.
        using IDeviceAccessScheduler s = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, DeviceMode.None, threadCount: 2);

        Assert.That(s.SelectionReason, Does.Contain("buffered").Or.StartWith("fell back"));
        Assert.That(s.Kind, Is.EqualTo(DeviceSchedulers.IoUringUnavailableReason is null
            ? DeviceSchedulerKind.IoUring
            : DeviceSchedulerKind.ThreadPool));
    }

    [Test]
    public void DeviceSchedulers_ThreadPoolRequested_ReturnsThreadPool()
    {
        // Contract: an explicit kind is honoured.
        using IDeviceAccessScheduler s = DeviceSchedulers.Create(DeviceSchedulerKind.ThreadPool, threadCount: 2);

        Assert.That(s.Kind, Is.EqualTo(DeviceSchedulerKind.ThreadPool));
        Assert.That(((ThreadPoolScheduler)s).ThreadCount, Is.EqualTo(2));
    }

    [Test]
    public void DeviceSchedulers_AutoForDirectMode_PicksIoUringWhereAvailable()
    {
        // Contract: direct I/O goes to io_uring when the kernel allows it, else to the thread pool with the reason.
        using IDeviceAccessScheduler s = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, DeviceMode.Direct, threadCount: 2);

        if (DeviceSchedulers.IoUringUnavailableReason is { } why)
        {
            Assert.That(s.Kind, Is.EqualTo(DeviceSchedulerKind.ThreadPool));
            Assert.That(s.SelectionReason, Does.Contain(why));
        }
        else
        {
            Assert.That(s.Kind, Is.EqualTo(DeviceSchedulerKind.IoUring));
        }
    }

    [Test]
    public void DeviceSchedulers_IoUringUnavailable_FallsBackToThreadPoolWithReason()
    {
        // Contract: where io_uring_setup fails (seccomp EPERM, ENOSYS, io_uring_disabled = 2) the factory falls back
        // cleanly and reports why.
        using IDeviceAccessScheduler s = DeviceSchedulers.CreateWithProbe(DeviceSchedulerKind.IoUring, DeviceMode.Direct,
            "io_uring_setup is not permitted (EPERM: simulated)");

        Assert.That(s.Kind, Is.EqualTo(DeviceSchedulerKind.ThreadPool));
        Assert.That(s.SelectionReason, Does.StartWith("fell back to the thread pool").And.Contain("EPERM"));
    }

    [Test]
    public void IoUringScheduler_Construct_ReportsRingSizes()
    {
        // Contract: a directly constructed ring reports the sizes the kernel granted (CQ = 4 x SQ).
        if (DeviceSchedulers.IoUringUnavailableReason is { } why)
        {
            Assert.Ignore(why);
        }

        using var s = new IoUringScheduler(32);

        Assert.That(s.SubmissionEntries, Is.EqualTo(32));
        Assert.That(s.CompletionEntries, Is.EqualTo(128));
        Assert.That(s.Kind, Is.EqualTo(DeviceSchedulerKind.IoUring));
        if (Environment.OSVersion.Version >= new Version(6, 1))
        {
            Assert.That(s.DeferTaskRun, Is.True, "kernels from 6.1 accept SINGLE_ISSUER | DEFER_TASKRUN");
        }
    }

    [Test]
    public void ThreadPoolScheduler_BadThreadCount_ThrowsArgumentOutOfRange()
    {
        // Contract: sizes outside 1..1024 are misuse.
        Assert.That(() => new ThreadPoolScheduler(-1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
