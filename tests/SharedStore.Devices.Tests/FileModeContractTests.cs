using System.Diagnostics;
using System.Globalization;
using System.Runtime.Versioning;
using System.Text;
using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>The file modes Fennel's own device test runs in; each maps to one <see cref="DeviceMode"/>.</summary>
public enum FileModeKind
{
    /// <summary>A named file through the page cache (Fennel's default).</summary>
    Permanent,

    /// <summary>An unnamed scratch file (<see cref="DeviceMode.Temporary"/>).</summary>
    Temporary,

    /// <summary>O_DSYNC, any alignment (<see cref="DeviceMode.WriteThrough"/>): what Fennel's "direct" means on Linux.</summary>
    WriteThrough,

    /// <summary>O_DIRECT (<see cref="DeviceMode.Direct"/>), kept as its own mode.</summary>
    Direct,
}

/// <summary>
/// The shape of Fennel's TestRandomAccessFileDevice, in every file mode and on both schedulers: create, grow,
/// shrink and reopen a device, then a scatter/gather write of five bindings and a read of five bindings with a
/// sixth, overlapping read beside it, with registration around them. Plus what the new modes promise: a temporary
/// device leaves nothing behind, also after kill -9; write-through accepts any alignment and really is O_DSYNC.
/// </summary>
[TestFixture]
[Category("Devices")]
[SupportedOSPlatform("linux")]
public sealed class FileModeContractTests
{
    private const int Half = 1 << 12; // 4096: Fennel's HALF_SIZE, one sector for every alignment seen on Linux
    private const int Full = 2 * Half;
    private const int Bindings = 5;
    private const int O_DSYNC = 0x1000; // 010000, as /proc/self/fdinfo prints it (octal)
    private const int O_DIRECT = 0x4000; // 040000

    private string _dir = "";

    public static IEnumerable<TestCaseData> Modes() =>
        Enum.GetValues<FileModeKind>().Select(m => new TestCaseData(m).SetArgDisplayNames(m.ToString()));

    public static IEnumerable<TestCaseData> SchedulersModesOffsets()
    {
        foreach (DeviceSchedulerKind s in new[] { DeviceSchedulerKind.ThreadPool, DeviceSchedulerKind.IoUring })
        {
            foreach (FileModeKind m in Enum.GetValues<FileModeKind>())
            {
                // 0, and 5 GiB as Fennel's large-file case: offsets beyond 32 bits (a sparse file, so cheap).
                foreach (long offset in new[] { 0L, 5L << 30 })
                {
                    yield return new TestCaseData(s, m, offset).SetArgDisplayNames(s.ToString(), m.ToString(), offset == 0 ? "at 0" : "at 5 GiB");
                }
            }
        }
    }

    public static IEnumerable<TestCaseData> Schedulers() =>
        new[] { DeviceSchedulerKind.ThreadPool, DeviceSchedulerKind.IoUring }.Select(s => new TestCaseData(s).SetArgDisplayNames(s.ToString()));

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine("/var/tmp", $"sharedstore-modetests-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static DeviceMode ModeOf(FileModeKind kind) => kind switch
    {
        FileModeKind.Temporary => DeviceMode.Temporary,
        FileModeKind.WriteThrough => DeviceMode.WriteThrough,
        FileModeKind.Direct => DeviceMode.Direct,
        _ => DeviceMode.None,
    };

    private RandomAccessFileDevice Open(FileModeKind kind, string name, bool create) =>
        new(Path.Combine(_dir, name), ModeOf(kind) | (create ? DeviceMode.Create : DeviceMode.None));

    private string[] Entries() => Directory.GetFileSystemEntries(_dir);

    [TestCaseSource(nameof(Modes))]
    public void FileDevice_CreateThenClose_PermanentReopensTemporaryLeavesNoName(FileModeKind kind)
    {
        // Contract (Fennel's testDeviceCreation): a created device can be closed and opened again without Create;
        // a temporary one has no name in its directory, neither while open nor after it is closed.
        using (RandomAccessFileDevice d = Open(kind, "test.dat", create: true))
        {
            Assert.That(d.Mode.HasFlag(ModeOf(kind)), Is.True);
            if (kind == FileModeKind.Temporary)
            {
                Assert.That(Entries(), Is.Empty, "a temporary device must not have a name while open");
            }
        }

        if (kind == FileModeKind.Temporary)
        {
            Assert.That(Entries(), Is.Empty, "a temporary device must leave nothing when closed");
            return;
        }

        using RandomAccessFileDevice again = Open(kind, "test.dat", create: false);
        Assert.That(again.Size, Is.Zero);
    }

    [TestCaseSource(nameof(Modes))]
    public void FileDevice_Grow_SizeHoldsAcrossReopen(FileModeKind kind)
    {
        // Contract (Fennel's testGrow): a new device is empty; SetSize grows it; a permanent device keeps the size.
        using (RandomAccessFileDevice d = Open(kind, "grow.dat", create: true))
        {
            Assert.That(d.Size, Is.Zero);
            d.SetSize(Full);
            Assert.That(d.Size, Is.EqualTo(Full));
        }

        if (kind == FileModeKind.Temporary)
        {
            Assert.That(Entries(), Is.Empty);
            return;
        }

        using RandomAccessFileDevice again = Open(kind, "grow.dat", create: false);
        Assert.That(again.Size, Is.EqualTo(Full));
    }

    [TestCaseSource(nameof(Modes))]
    public void FileDevice_Shrink_SizeHoldsAcrossReopen(FileModeKind kind)
    {
        // Contract (Fennel's testShrink): SetSize shrinks a device as well; a permanent device keeps the new size.
        using (RandomAccessFileDevice d = Open(kind, "shrink.dat", create: true))
        {
            d.SetSize(Full);
            Assert.That(d.Size, Is.EqualTo(Full));
            if (kind == FileModeKind.Temporary)
            {
                d.SetSize(Half);
                Assert.That(d.Size, Is.EqualTo(Half));
                return;
            }
        }

        using (RandomAccessFileDevice d = Open(kind, "shrink.dat", create: false))
        {
            Assert.That(d.Size, Is.EqualTo(Full));
            d.SetSize(Half);
        }

        using RandomAccessFileDevice again = Open(kind, "shrink.dat", create: false);
        Assert.That(again.Size, Is.EqualTo(Half));
    }

    [TestCaseSource(nameof(SchedulersModesOffsets))]
    public void Schedule_FiveBindingScatterGather_WritesAndReadsBackAcrossReopen(DeviceSchedulerKind schedulerKind, FileModeKind kind, long offset)
    {
        // Contract (Fennel's testAsyncIO): five bindings that all write the same page land in five consecutive
        // pages; after a flush (and, for a permanent file, unregister, close, reopen and register again) a five-binding
        // read scatters them back, while a sixth read of the first page runs beside it. Every binding is notified
        // once, complete. A temporary device leaves nothing behind.
        using IDeviceAccessScheduler scheduler = CreateScheduler(schedulerKind);
        using var buffers = new DeviceBuffers(Half, 2 * Bindings + 1);
        nint source = buffers[0];
        byte[] phrase = Encoding.ASCII.GetBytes($"SharedStore scatter/gather in {kind} mode at offset {offset}. ");
        Span<byte> src = buffers.GetSpan(0);
        for (int i = 0; i < Half; i++)
        {
            src[i] = phrase[i % phrase.Length];
        }

        RandomAccessFileDevice device = Open(kind, "async.dat", create: true);
        try
        {
            device.SetSize(offset + (Bindings * Half));
            if (kind != FileModeKind.Temporary)
            {
                device.Dispose();
                device = Open(kind, "async.dat", create: false);
                Assert.That(device.Size, Is.EqualTo(offset + (Bindings * Half)));
            }

            scheduler.RegisterDevice(device);
            var writeLog = new NotificationLog(Bindings);
            var write = new RandomAccessRequest(device, RandomAccessOperation.Write, offset);
            for (int i = 0; i < Bindings; i++)
            {
                write.Add(new RandomAccessRequestBinding(source, Half, writeLog.Callback));
            }

            scheduler.Schedule(write);
            Assert.That(writeLog.Wait(), Is.True, "write notifications timed out");
            Assert.That(write.Bindings.Select(b => writeLog.ResultFor(b).IsComplete), Is.All.True);
            device.Flush();

            if (kind != FileModeKind.Temporary)
            {
                Assert.That(scheduler.UnregisterDevice(device, DeviceHarness.Timeout), Is.True);
                device.Dispose();
                device = Open(kind, "async.dat", create: false);
                scheduler.RegisterDevice(device);
            }

            var readLog = new NotificationLog(Bindings + 1);
            var read = new RandomAccessRequest(device, RandomAccessOperation.Read, offset);
            for (int i = 0; i < Bindings; i++)
            {
                buffers.GetSpan(1 + i).Clear();
                read.Add(new RandomAccessRequestBinding(buffers[1 + i], Half, readLog.Callback));
            }

            buffers.GetSpan(1 + Bindings).Clear();
            var overlapping = new RandomAccessRequest(device, RandomAccessOperation.Read, offset)
                .Add(new RandomAccessRequestBinding(buffers[1 + Bindings], Half, readLog.Callback));

            scheduler.Schedule(read);
            scheduler.Schedule(overlapping);

            Assert.That(readLog.Wait(), Is.True, "read notifications timed out");
            Assert.That(readLog.TotalNotifications, Is.EqualTo(Bindings + 1));
            Assert.That(read.Bindings.Concat(overlapping.Bindings).Select(b => readLog.ResultFor(b).IsComplete), Is.All.True);
            byte[] expected = src.ToArray();
            for (int i = 0; i <= Bindings; i++)
            {
                Assert.That(buffers.GetSpan(1 + i).ToArray(), Is.EqualTo(expected), $"read binding {i}");
            }

            Assert.That(scheduler.UnregisterDevice(device, DeviceHarness.Timeout), Is.True);
        }
        finally
        {
            device.Dispose();
        }

        if (kind == FileModeKind.Temporary)
        {
            Assert.That(Entries(), Is.Empty);
        }
    }

    [TestCaseSource(nameof(Schedulers))]
    public void Schedule_WriteThroughAtAnyAlignment_RoundTripsWhereDirectRefuses(DeviceSchedulerKind schedulerKind)
    {
        // Contract: WriteThrough has no alignment rule (odd offset, odd length, odd address all transfer), while
        // Direct refuses the same transfer as Misaligned before it reaches the kernel.
        using IDeviceAccessScheduler scheduler = CreateScheduler(schedulerKind);
        using var buffers = new DeviceBuffers(Full, 2);
        const long offset = 4097;
        const int length = 1001;
        nint src = buffers[0] + 3;
        nint dst = buffers[1] + 5;
        for (int i = 0; i < length; i++)
        {
            buffers.GetSpan(0)[3 + i] = (byte)(i * 13);
        }

        using var writeThrough = new RandomAccessFileDevice(Path.Combine(_dir, "wt.dat"), DeviceMode.Create | DeviceMode.WriteThrough);
        using var direct = new RandomAccessFileDevice(Path.Combine(_dir, "direct.dat"), DeviceMode.Create | DeviceMode.Direct);
        direct.SetSize(Full * 4);
        var log = new NotificationLog(2);
        var write = new RandomAccessRequest(writeThrough, RandomAccessOperation.Write, offset)
            .Add(new RandomAccessRequestBinding(src, length, log.Callback));
        var refused = new RandomAccessRequest(direct, RandomAccessOperation.Write, offset)
            .Add(new RandomAccessRequestBinding(src, length, log.Callback));

        scheduler.Schedule(write);
        scheduler.Schedule(refused);
        Assert.That(log.Wait(), Is.True);
        var readLog = new NotificationLog(1);
        var read = new RandomAccessRequest(writeThrough, RandomAccessOperation.Read, offset)
            .Add(new RandomAccessRequestBinding(dst, length, readLog.Callback));
        scheduler.Schedule(read);
        Assert.That(readLog.Wait(), Is.True);

        Assert.That(log.ResultFor(write.Bindings[0]).IsComplete, Is.True);
        Assert.That(log.ResultFor(refused.Bindings[0]).Status, Is.EqualTo(TransferStatus.Misaligned));
        Assert.That(readLog.ResultFor(read.Bindings[0]).IsComplete, Is.True);
        Assert.That(buffers.GetSpan(1).Slice(5, length).ToArray(), Is.EqualTo(buffers.GetSpan(0).Slice(3, length).ToArray()));
        Assert.That(writeThrough.Size, Is.EqualTo(offset + length));
    }

    [TestCaseSource(nameof(Modes))]
    public void FileDevice_Mode_IsWhatTheKernelSees(FileModeKind kind)
    {
        // Contract: each mode is the open flag it promises, as the kernel reports the descriptor (/proc/self/fdinfo:
        // O_DSYNC for WriteThrough, O_DIRECT for Direct, neither otherwise; /proc/self/fd: an unlinked file for
        // Temporary).
        using RandomAccessFileDevice d = Open(kind, "flags.dat", create: true);
        int fd = d.FileHandle!.Fd;
        string fdinfo = File.ReadAllText($"/proc/self/fdinfo/{fd}");
        string flagsText = fdinfo.Split('\n').First(l => l.StartsWith("flags:", StringComparison.Ordinal))["flags:".Length..].Trim();
        int flags = Convert.ToInt32(flagsText, 8);
        string target = new FileInfo($"/proc/self/fd/{fd}").LinkTarget ?? "";

        Assert.That((flags & O_DSYNC) != 0, Is.EqualTo(kind == FileModeKind.WriteThrough), $"flags {flagsText}");
        Assert.That((flags & O_DIRECT) != 0, Is.EqualTo(kind == FileModeKind.Direct), $"flags {flagsText}");
        Assert.That(target.EndsWith("(deleted)", StringComparison.Ordinal), Is.EqualTo(kind == FileModeKind.Temporary), target);
        Assert.That(target, Does.StartWith(_dir));
    }

    [Test]
    public void TemporaryDevice_OwnerKilledWithSigkill_LeavesNothingBehind()
    {
        // Contract: a temporary device's file is gone when its process dies without closing it. A child process opens
        // one here, writes 1 MiB to it and reports; the test sees the child hold an unnamed file in the directory,
        // kills it with SIGKILL, and finds the directory still empty. An implementation that
        // deletes the file on Dispose fails here (checked with such a mutant: the name stays behind).
        var stderr = new StringBuilder();
        using var ready = new ManualResetEventSlim();
        string? line = null;
        using Process child = DeviceChild.Start(["temporary-device", Path.Combine(_dir, "scratch.dat")], stderr, l =>
        {
            line = l;
            ready.Set();
        });
        try
        {
            Assert.That(ready.Wait(DeviceHarness.Timeout), Is.True, $"the child did not report; stderr: {stderr}");
            Assert.That(line, Does.StartWith("ready "), $"stderr: {stderr}");
            int fd = int.Parse(line!["ready ".Length..], CultureInfo.InvariantCulture);
            string held = new FileInfo($"/proc/{child.Id}/fd/{fd}").LinkTarget ?? "";
            Assert.That(held, Does.StartWith(_dir).And.EndWith("(deleted)"), "the child must hold an unnamed file in the directory");
            Assert.That(Entries(), Is.Empty, "the temporary file must have no name while its owner lives");

            child.Kill();
            Assert.That(child.WaitForExit(30_000), Is.True);
        }
        finally
        {
            if (!child.HasExited)
            {
                child.Kill();
                child.WaitForExit(30_000);
            }
        }

        Assert.That(Entries(), Is.Empty, "kill -9 of the owner must leave nothing behind");
    }

    private static IDeviceAccessScheduler CreateScheduler(DeviceSchedulerKind kind)
    {
        if (kind == DeviceSchedulerKind.IoUring && DeviceSchedulers.IoUringUnavailableReason is { } why)
        {
            Assert.Ignore($"io_uring unavailable: {why}");
        }

        return kind == DeviceSchedulerKind.IoUring ? new IoUringScheduler(64) : new ThreadPoolScheduler(4);
    }
}
