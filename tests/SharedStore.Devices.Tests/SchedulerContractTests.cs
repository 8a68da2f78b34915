using System.Runtime.Versioning;
using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>
/// The contract every scheduler x device pair must honour (the seed's TestRandomAccessFileDevice, grown up):
/// data round-trips, short reads at end of device, deep queues, per-binding errors, cancellation and shutdown, with
/// every binding notified exactly once.
/// </summary>
[TestFixture]
[Category("Devices")]
[SupportedOSPlatform("linux")]
public sealed class SchedulerContractTests
{
    private static readonly DeviceSchedulerKind[] s_schedulers = [DeviceSchedulerKind.ThreadPool, DeviceSchedulerKind.IoUring];

    public static IEnumerable<TestCaseData> AllPairs()
    {
        foreach (DeviceSchedulerKind s in s_schedulers)
        {
            foreach (TestDevice d in Enum.GetValues<TestDevice>())
            {
                yield return new TestCaseData(s, d).SetArgDisplayNames(s.ToString(), d.ToString());
            }
        }
    }

    public static IEnumerable<TestCaseData> AllSchedulers() =>
        s_schedulers.Select(s => new TestCaseData(s).SetArgDisplayNames(s.ToString()));

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_ScatterGatherWriteThenRead_RoundTripsData(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: bindings cover consecutive device ranges in order; a READ returns what the WRITE stored.
        using var h = DeviceHarness.Create(scheduler, device);
        int[] lengths = [DeviceHarness.Block, 3 * DeviceHarness.Block, DeviceHarness.Block * 2];
        var write = new RandomAccessRequest(h.Device, RandomAccessOperation.Write, 8 * DeviceHarness.Block);
        var read = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 8 * DeviceHarness.Block);
        var log = new NotificationLog(lengths.Length);
        var sources = new List<nint>();
        var targets = new List<nint>();
        for (int i = 0; i < lengths.Length; i++)
        {
            nint src = h.Alloc(lengths[i]);
            DeviceHarness.Fill(src, lengths[i], i + 1);
            sources.Add(src);
            write.Add(new RandomAccessRequestBinding(src, lengths[i], log.Callback));
            nint dst = h.Alloc(lengths[i]);
            DeviceHarness.Span(dst, lengths[i]).Fill(0xEE);
            targets.Add(dst);
        }

        h.Scheduler.Schedule(write);
        Assert.That(log.Wait(), Is.True, "write notifications timed out");
        Assert.That(log.Results.Select(r => r.Status), Is.All.EqualTo(TransferStatus.Success));

        var readLog = new NotificationLog(lengths.Length);
        for (int i = 0; i < lengths.Length; i++)
        {
            read.Add(new RandomAccessRequestBinding(targets[i], lengths[i], readLog.Callback));
        }

        h.Scheduler.Schedule(read);
        Assert.That(readLog.Wait(), Is.True, "read notifications timed out");
        for (int i = 0; i < lengths.Length; i++)
        {
            RandomAccessRequestBinding b = read.Bindings[i];
            Assert.That(readLog.ResultFor(b), Is.EqualTo(new TransferResult(TransferStatus.Success, lengths[i], 0)));
            Assert.That((readLog.ResultFor(b).IsComplete, readLog.ResultFor(b).IsShort), Is.EqualTo((true, false)), $"binding {i}");
            byte[] expected = h.StoresData ? DeviceHarness.Span(sources[i], lengths[i]).ToArray() : new byte[lengths[i]];
            Assert.That(DeviceHarness.Span(targets[i], lengths[i]).ToArray(), Is.EqualTo(expected), $"binding {i}");
        }
    }

    [TestCaseSource(nameof(AllPairs))]
    public async Task DeviceAccess_ScatterGatherAsync_RoundTripsData(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: the ValueTask surface moves the same bytes as the request API and reports the total.
        using var h = DeviceHarness.Create(scheduler, device);
        int n = DeviceHarness.Block;
        nint a = h.Alloc(n), b = h.Alloc(2 * n), c = h.Alloc(n), d = h.Alloc(2 * n);
        DeviceHarness.Fill(a, n, 5);
        DeviceHarness.Fill(b, 2 * n, 6);
        var native = new NativeMemoryManager(a, n);
        var native2 = new NativeMemoryManager(b, 2 * n);
        await h.Scheduler.WriteAsync(h.Device, 4 * n, [native.Memory, native2.Memory]).AsTask().WaitAsync(DeviceHarness.Timeout);
        long read = await h.Scheduler.ReadAsync(h.Device, 4 * n,
            [new NativeMemoryManager(c, n).Memory, new NativeMemoryManager(d, 2 * n).Memory]).AsTask().WaitAsync(DeviceHarness.Timeout);

        Assert.That(read, Is.EqualTo(3L * n));
        if (h.StoresData)
        {
            Assert.That(DeviceHarness.Span(c, n).ToArray(), Is.EqualTo(DeviceHarness.Span(a, n).ToArray()));
            Assert.That(DeviceHarness.Span(d, 2 * n).ToArray(), Is.EqualTo(DeviceHarness.Span(b, 2 * n).ToArray()));
        }
    }

    [TestCaseSource(nameof(AllPairs))]
    public async Task DeviceAccess_ManagedBuffers_RoundTripsData(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: Memory<byte> over managed arrays is pinned by the library for the transfer.
        if (device == TestDevice.FileDirect)
        {
            Assert.Ignore("managed arrays are not 512-byte aligned; direct I/O is covered with native buffers");
        }

        using var h = DeviceHarness.Create(scheduler, device);
        byte[] data = new byte[10_000];
        new Random(42).NextBytes(data);
        await h.Scheduler.WriteAsync(h.Device, 123, data).AsTask().WaitAsync(DeviceHarness.Timeout);
        byte[] back = new byte[10_000];
        int n = await h.Scheduler.ReadAsync(h.Device, 123, back).AsTask().WaitAsync(DeviceHarness.Timeout);

        Assert.That(n, Is.EqualTo(back.Length));
        Assert.That(back, Is.EqualTo(h.StoresData ? data : new byte[back.Length]));
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_ReadAcrossEndOfDevice_ReturnsShortCountThenZero(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: a READ reaching end of device returns the bytes up to the end; bindings wholly past it return 0.
        using var h = DeviceHarness.Create(scheduler, device);
        const int size = 2 * DeviceHarness.Block + 1000;
        h.Resize(size);
        var log = new NotificationLog(2);
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 2 * DeviceHarness.Block)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback))
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(request);

        Assert.That(log.Wait(), Is.True);
        TransferResult first = log.ResultFor(request.Bindings[0]);
        TransferResult second = log.ResultFor(request.Bindings[1]);
        Assert.That(first, Is.EqualTo(new TransferResult(TransferStatus.Success, 1000, 0, DeviceHarness.Block)));
        Assert.That(second, Is.EqualTo(new TransferResult(TransferStatus.Success, 0, 0, DeviceHarness.Block)));

        // One property tells a short transfer from a full one.
        Assert.That((first.IsShort, first.IsComplete, second.IsShort, second.IsComplete), Is.EqualTo((true, false, true, false)));
    }

    [TestCaseSource(nameof(AllPairs))]
    public async Task DeviceAccess_ReadAtEndOfDevice_ReturnsShortCount(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: the async READ returns the short count at end of device instead of looping or failing.
        using var h = DeviceHarness.Create(scheduler, device);
        h.Resize(DeviceHarness.Block + 100);
        nint p = h.Alloc(2 * DeviceHarness.Block);

        int n = await h.Scheduler.ReadAsync(h.Device, DeviceHarness.Block,
            new NativeMemoryManager(p, 2 * DeviceHarness.Block).Memory).AsTask().WaitAsync(DeviceHarness.Timeout);

        Assert.That(n, Is.EqualTo(100));
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_HundredsOfRequestsInFlight_EachBindingNotifiedOnceWithData(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: a deep queue (more bindings than the io_uring ring holds) completes every binding exactly once.
        using var h = DeviceHarness.Create(scheduler, device);
        const int requests = 256; // 512 bindings: more than the 64-entry test ring holds, so the overflow queue runs
        const int half = DeviceHarness.Block / 2;
        var writes = new List<RandomAccessRequest>();
        var log = new NotificationLog(requests * 2);
        nint src = h.Alloc(requests * DeviceHarness.Block);
        DeviceHarness.Fill(src, requests * DeviceHarness.Block, 9);
        for (int i = 0; i < requests; i++)
        {
            nint p = src + i * DeviceHarness.Block;
            writes.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Write, (long)i * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(p, half, log.Callback))
                .Add(new RandomAccessRequestBinding(p + half, half, log.Callback)));
        }

        foreach (RandomAccessRequest r in writes)
        {
            h.Scheduler.Schedule(r);
        }

        Assert.That(log.Wait(), Is.True, "writes timed out");
        Assert.That(log.TotalNotifications, Is.EqualTo(requests * 2));
        Assert.That(log.Results.Select(r => r.Status), Is.All.EqualTo(TransferStatus.Success));

        var readLog = new NotificationLog(requests);
        nint dst = h.Alloc(requests * DeviceHarness.Block);
        var reads = new List<RandomAccessRequest>();
        for (int i = 0; i < requests; i++)
        {
            reads.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Read, (long)i * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(dst + i * DeviceHarness.Block, DeviceHarness.Block, readLog.Callback)));
        }

        foreach (RandomAccessRequest r in reads)
        {
            h.Scheduler.Schedule(r);
        }

        Assert.That(readLog.Wait(), Is.True, "reads timed out");
        Assert.That(reads.All(r => readLog.CountFor(r.Bindings[0]) == 1), Is.True);
        Assert.That(h.Scheduler.InFlight, Is.Zero);
        byte[] expected = h.StoresData
            ? DeviceHarness.Span(src, requests * DeviceHarness.Block).ToArray()
            : new byte[requests * DeviceHarness.Block];
        Assert.That(DeviceHarness.Span(dst, requests * DeviceHarness.Block).ToArray(), Is.EqualTo(expected));
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_NegativeOffset_ReportsOutOfRangeWithoutLosingOtherRequests(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: a bad offset is an outcome reported through the binding; neighbouring requests still complete.
        using var h = DeviceHarness.Create(scheduler, device);
        var log = new NotificationLog(3);
        var good1 = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));
        var bad = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, -DeviceHarness.Block)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));
        var good2 = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, DeviceHarness.Block)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(good1);
        h.Scheduler.Schedule(bad);
        h.Scheduler.Schedule(good2);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(bad.Bindings[0]).Status, Is.EqualTo(TransferStatus.OutOfRange));
        Assert.That(log.ResultFor(good1.Bindings[0]).Status, Is.EqualTo(TransferStatus.Success));
        Assert.That(log.ResultFor(good2.Bindings[0]).Status, Is.EqualTo(TransferStatus.Success));
        Assert.That(log.TotalNotifications, Is.EqualTo(3));
    }

    [TestCaseSource(nameof(AllPairs))]
    public async Task Schedule_WriteToReadOnlyDevice_ReportsReadOnly(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: a WRITE to a read-only device fails through its binding (and as DeviceException when awaited).
        if (device == TestDevice.Null)
        {
            Assert.Ignore("the null device has no read-only mode");
        }

        using var h = DeviceHarness.Create(scheduler, device, readOnly: true);
        var log = new NotificationLog(1);
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Write, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(request);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(request.Bindings[0]).Status, Is.EqualTo(TransferStatus.ReadOnly));
        nint p = h.Alloc(DeviceHarness.Block);
        DeviceException? e = Assert.ThrowsAsync<DeviceException>(async () =>
            await h.Scheduler.WriteAsync(h.Device, 0, new NativeMemoryManager(p, DeviceHarness.Block).Memory)
                .AsTask().WaitAsync(DeviceHarness.Timeout));
        Assert.That(e!.Status, Is.EqualTo(TransferStatus.ReadOnly));
        await Task.CompletedTask;
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_ClosedDevice_ReportsDeviceClosed(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: transfers on a disposed device are refused through the binding, not thrown by Schedule.
        using var h = DeviceHarness.Create(scheduler, device);
        h.Device.Dispose();
        var log = new NotificationLog(2);
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback))
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(request);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.Results.Select(r => r.Status), Is.All.EqualTo(TransferStatus.DeviceClosed));
        Assert.That(log.TotalNotifications, Is.EqualTo(2));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_MisalignedDirectIo_ReportsMisalignedWithoutLosingOtherBindings(DeviceSchedulerKind scheduler)
    {
        // Contract: O_DIRECT alignment is checked up front per binding; aligned bindings of the same request run.
        using var h = DeviceHarness.Create(scheduler, TestDevice.FileDirect);
        Assert.That(h.Device.OffsetAlignment, Is.GreaterThanOrEqualTo(512));
        var log = new NotificationLog(4);
        nint buf = h.Alloc(4 * DeviceHarness.Block);
        var mixed = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(buf, DeviceHarness.Block, log.Callback))
            .Add(new RandomAccessRequestBinding(buf + DeviceHarness.Block, 100, log.Callback)) // bad length
            .Add(new RandomAccessRequestBinding(buf + 2 * DeviceHarness.Block, DeviceHarness.Block, log.Callback)); // offset now misaligned
        var badOffset = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 100)
            .Add(new RandomAccessRequestBinding(buf + 3 * DeviceHarness.Block, DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(mixed);
        h.Scheduler.Schedule(badOffset);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(mixed.Bindings[0]).Status, Is.EqualTo(TransferStatus.Success));
        Assert.That(log.ResultFor(mixed.Bindings[1]).Status, Is.EqualTo(TransferStatus.Misaligned));
        Assert.That(log.ResultFor(mixed.Bindings[2]).Status, Is.EqualTo(TransferStatus.Misaligned));
        Assert.That(log.ResultFor(badOffset.Bindings[0]).Status, Is.EqualTo(TransferStatus.Misaligned));
        Assert.That(log.ResultFor(badOffset.Bindings[0]).ToException(badOffset.Bindings[0]).Message, Does.Contain("multiples of"));
        Assert.That(log.TotalNotifications, Is.EqualTo(4));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_MisalignedDirectBufferAddress_ReportsMisaligned(DeviceSchedulerKind scheduler)
    {
        // Contract: a buffer address off the memory alignment is refused before the kernel sees it.
        using var h = DeviceHarness.Create(scheduler, TestDevice.FileDirect);
        if (h.Device.MemoryAlignment < 2)
        {
            Assert.Ignore("this file system accepts any buffer address for direct I/O");
        }

        var log = new NotificationLog(1);
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(2 * DeviceHarness.Block) + 1, DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(request);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(request.Bindings[0]).Status, Is.EqualTo(TransferStatus.Misaligned));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_WritePastEndOfMemoryRegion_ReportsOutOfRange(DeviceSchedulerKind scheduler)
    {
        // Contract: a fixed-size region refuses writes beyond its end instead of corrupting memory.
        using var h = DeviceHarness.Create(scheduler, TestDevice.Memory);
        var log = new NotificationLog(1);
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Write, DeviceHarness.DeviceSize - 10)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        h.Scheduler.Schedule(request);

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(request.Bindings[0]).Status, Is.EqualTo(TransferStatus.OutOfRange));
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Cancel_ManyRequestsInFlight_EachBindingNotifiedOnceAsCancelledOrCompleted(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: cancellation is best effort, but every binding still gets exactly one notification.
        using var h = DeviceHarness.Create(scheduler, device);
        const int requests = 300;
        var log = new NotificationLog(requests);
        nint buf = h.Alloc(requests * DeviceHarness.Block);
        var all = new List<RandomAccessRequest>();
        for (int i = 0; i < requests; i++)
        {
            all.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Read, (long)(i % 200) * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(buf + i * DeviceHarness.Block, DeviceHarness.Block, log.Callback)));
        }

        foreach (RandomAccessRequest r in all)
        {
            h.Scheduler.Schedule(r);
        }

        foreach (RandomAccessRequest r in all)
        {
            h.Scheduler.Cancel(r);
        }

        Assert.That(log.Wait(), Is.True);
        Assert.That(all.All(r => log.CountFor(r.Bindings[0]) == 1), Is.True);
        Assert.That(log.Results.Select(r => r.Status),
            Is.All.AnyOf(TransferStatus.Success, TransferStatus.Cancelled));
    }

    [Test]
    public void ThreadPoolScheduler_CancelQueuedBinding_ReportsCancelled()
    {
        // Contract: a binding still queued when cancelled is never transferred and reports Cancelled.
        using var h = DeviceHarness.Create(DeviceSchedulerKind.ThreadPool, TestDevice.Memory, threads: 1);
        using var gate = new ManualResetEventSlim();
        using var started = new ManualResetEventSlim();
        var log = new NotificationLog(2);
        var blocker = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, (b, r) =>
            {
                started.Set();
                gate.Wait(DeviceHarness.Timeout);
                log.Callback(b, r);
            }));
        var victim = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, log.Callback));

        h.Scheduler.Schedule(blocker);
        Assert.That(started.Wait(DeviceHarness.Timeout), Is.True);
        h.Scheduler.Schedule(victim);
        h.Scheduler.Cancel(victim);
        gate.Set();

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(victim.Bindings[0]).Status, Is.EqualTo(TransferStatus.Cancelled));
        Assert.That(log.ResultFor(victim.Bindings[0]).Errno, Is.EqualTo(125)); // ECANCELED
    }

    [TestCaseSource(nameof(AllPairs))]
    public void DeviceAccess_CancelledToken_ThrowsOperationCanceled(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: a token cancelled before the call yields a cancelled task and schedules nothing.
        using var h = DeviceHarness.Create(scheduler, device);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        nint p = h.Alloc(DeviceHarness.Block);

        Assert.That(async () => await h.Scheduler.ReadAsync(h.Device, 0, new NativeMemoryManager(p, DeviceHarness.Block).Memory, cts.Token)
            .AsTask().WaitAsync(DeviceHarness.Timeout), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(h.Scheduler.InFlight, Is.Zero);
    }

    [TestCaseSource(nameof(AllPairs))]
    public async Task DeviceAccess_TokenCancelledDuringTransfers_EveryTaskEndsCompletedOrCancelled(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: cancelling mid-flight ends every task as either completed or cancelled, never hung or faulted.
        using var h = DeviceHarness.Create(scheduler, device);
        using var cts = new CancellationTokenSource();
        nint buf = h.Alloc(200 * DeviceHarness.Block);
        var tasks = new List<Task<int>>();
        for (int i = 0; i < 200; i++)
        {
            tasks.Add(h.Scheduler.ReadAsync(h.Device, (long)i * DeviceHarness.Block,
                new NativeMemoryManager(buf + i * DeviceHarness.Block, DeviceHarness.Block).Memory, cts.Token).AsTask());
        }

        cts.Cancel();
        try
        {
            await Task.WhenAll(tasks).WaitAsync(DeviceHarness.Timeout);
        }
        catch (OperationCanceledException)
        {
        }

        Assert.That(tasks.All(t => t.IsCompletedSuccessfully || t.IsCanceled), Is.True);
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Dispose_WithRequestsInFlight_EveryBindingNotifiedExactlyOnce(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: shutdown drains; each binding gets exactly one notification (completed or cancelled).
        var h = DeviceHarness.Create(scheduler, device);
        const int requests = 400;
        var log = new NotificationLog(requests * 2);
        nint buf = h.Alloc(requests * DeviceHarness.Block);
        var all = new List<RandomAccessRequest>();
        for (int i = 0; i < requests; i++)
        {
            nint p = buf + i * DeviceHarness.Block;
            all.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Write, (long)(i % 200) * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(p, DeviceHarness.Block / 2, log.Callback))
                .Add(new RandomAccessRequestBinding(p + DeviceHarness.Block / 2, DeviceHarness.Block / 2, log.Callback)));
        }

        foreach (RandomAccessRequest r in all)
        {
            h.Scheduler.Schedule(r);
        }

        h.Scheduler.Dispose();

        Assert.That(log.Wait(), Is.True, "some binding was never notified");
        Assert.That(all.SelectMany(r => r.Bindings).All(b => log.CountFor(b) == 1), Is.True);
        Assert.That(log.Results.Select(r => r.Status), Is.All.AnyOf(TransferStatus.Success, TransferStatus.Cancelled));
        Assert.That(h.Scheduler.InFlight, Is.Zero);
        Assert.That(() => h.Scheduler.Schedule(all[0]), Throws.InstanceOf<ObjectDisposedException>());
        h.Dispose();
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Dispose_CalledTwice_IsIdempotent(DeviceSchedulerKind scheduler)
    {
        // Contract: Dispose and DisposeAsync may both be called, any number of times.
        using var h = DeviceHarness.Create(scheduler, TestDevice.Null);
        h.Scheduler.Dispose();

        Assert.That(() => h.Scheduler.Dispose(), Throws.Nothing);
        Assert.That(async () => await h.Scheduler.DisposeAsync(), Throws.Nothing);
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Dispose_FromNotificationHandler_ThrowsInvalidOperation(DeviceSchedulerKind scheduler)
    {
        // Contract: a scheduler refuses to dispose itself from its own notification thread (it would wait on itself).
        using var h = DeviceHarness.Create(scheduler, TestDevice.Null);

        Exception? caught = CaughtInHandler(h, () => h.Scheduler.Dispose());

        Assert.That(caught, Is.InstanceOf<InvalidOperationException>());
    }

    /// <summary>Runs <paramref name="action"/> inside a notification handler of the harness's scheduler and returns
    /// what it threw (null if nothing).</summary>
    private static Exception? CaughtInHandler(DeviceHarness h, Action action)
    {
        Exception? caught = null;
        using var done = new ManualResetEventSlim();
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, (_, _) =>
            {
                try
                {
                    action();
                }
                catch (Exception e)
                {
                    caught = e;
                }

                done.Set();
            }));

        h.Scheduler.Schedule(request);
        Assert.That(done.Wait(DeviceHarness.Timeout), Is.True, "the handler did not run");
        return caught;
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_BindingAlreadyInFlight_ThrowsInvalidOperation(DeviceSchedulerKind scheduler)
    {
        // Contract: scheduling a binding again before its notification is misuse and throws; the first schedule
        // still completes once.
        using var h = DeviceHarness.Create(scheduler, TestDevice.Memory, threads: 1);
        using var gate = new ManualResetEventSlim();
        using var started = new ManualResetEventSlim();
        var log = new NotificationLog(2);
        var blocker = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, (b, r) =>
            {
                started.Set();
                gate.Wait(DeviceHarness.Timeout);
                log.Callback(b, r);
            }));
        var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, log.Callback));
        h.Scheduler.Schedule(blocker);
        Assert.That(started.Wait(DeviceHarness.Timeout), Is.True);

        h.Scheduler.Schedule(request);

        Assert.That(() => h.Scheduler.Schedule(request), Throws.InvalidOperationException);
        gate.Set();
        Assert.That(log.Wait(), Is.True);
        Assert.That(log.TotalNotifications, Is.EqualTo(2));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_NotificationHandlerThrows_CountsFaultAndKeepsNotifying(DeviceSchedulerKind scheduler)
    {
        // Contract: a throwing handler cannot kill the completion thread or swallow other notifications.
        using var h = DeviceHarness.Create(scheduler, TestDevice.Null);
        var log = new NotificationLog(1);
        var throwing = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, (_, _) => throw new InvalidOperationException("handler bug")));
        h.Scheduler.Schedule(throwing);
        var after = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(16), 16, log.Callback));

        h.Scheduler.Schedule(after);

        Assert.That(log.Wait(), Is.True);
        Assert.That(() => h.Scheduler.NotificationFaults, Is.EqualTo(1).After(5000, 10));
    }

    [TestCaseSource(nameof(AllPairs))]
    public void Schedule_HandlerReschedulesFromCompletion_KeepsQueueDepth(DeviceSchedulerKind scheduler, TestDevice device)
    {
        // Contract: handlers may schedule the next request (the bench's queue-depth loop), and it makes progress.
        using var h = DeviceHarness.Create(scheduler, device);
        const int depth = 8;
        const int total = 2000;
        int issued = depth;
        using var done = new CountdownEvent(total);
        IDeviceAccessScheduler s = h.Scheduler;
        for (int i = 0; i < depth; i++)
        {
            var request = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, (long)i * DeviceHarness.Block);
            request.Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, (b, r) =>
            {
                done.Signal();
                if (Interlocked.Increment(ref issued) <= total)
                {
                    b.Request!.Offset = (b.Request.Offset + DeviceHarness.Block) % (DeviceHarness.DeviceSize - DeviceHarness.Block);
                    s.Schedule(b.Request);
                }
            }));
            s.Schedule(request);
        }

        Assert.That(done.Wait(DeviceHarness.Timeout), Is.True);
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_DeviceDisposedWithTransfersInFlight_EveryBindingNotifiedOnce(DeviceSchedulerKind scheduler)
    {
        // Contract: disposing a device mid-flight is safe: started transfers finish on their descriptor reference,
        // the rest report DeviceClosed, and nothing is lost or notified twice.
        using var h = DeviceHarness.Create(scheduler, TestDevice.FileDirect);
        const int requests = 300;
        var log = new NotificationLog(requests);
        nint buf = h.Alloc(requests * DeviceHarness.Block);
        var all = new List<RandomAccessRequest>();
        for (int i = 0; i < requests; i++)
        {
            all.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Read, (long)(i % 200) * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(buf + i * DeviceHarness.Block, DeviceHarness.Block, log.Callback)));
        }

        foreach (RandomAccessRequest r in all)
        {
            h.Scheduler.Schedule(r);
        }

        h.Device.Dispose();

        Assert.That(log.Wait(), Is.True);
        Assert.That(all.All(r => log.CountFor(r.Bindings[0]) == 1), Is.True);
        Assert.That(log.Results.Select(r => r.Status), Is.All.AnyOf(TransferStatus.Success, TransferStatus.DeviceClosed));
    }

    [Test]
    public void ThreadPoolScheduler_ShortWritesAndReads_AreLoopedToFullLength()
    {
        // Contract: a pwrite/pread that moves fewer bytes than asked (forced here through the test hook) is looped
        // until the binding is complete.
        using var h = DeviceHarness.Create(DeviceSchedulerKind.ThreadPool, TestDevice.File);
        ((RandomAccessFileDevice)h.Device).MaxBytesPerCall = 1000;
        const int length = 3 * DeviceHarness.Block + 17;
        nint src = h.Alloc(length);
        nint dst = h.Alloc(length);
        DeviceHarness.Fill(src, length, 3);
        var log = new NotificationLog(1);
        var write = new RandomAccessRequest(h.Device, RandomAccessOperation.Write, 5)
            .Add(new RandomAccessRequestBinding(src, length, log.Callback));

        h.Scheduler.Schedule(write);
        Assert.That(log.Wait(), Is.True);
        var readLog = new NotificationLog(1);
        var read = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 5)
            .Add(new RandomAccessRequestBinding(dst, length, readLog.Callback));
        h.Scheduler.Schedule(read);

        Assert.That(readLog.Wait(), Is.True);
        Assert.That(log.ResultFor(write.Bindings[0]), Is.EqualTo(new TransferResult(TransferStatus.Success, length, 0)));
        Assert.That(readLog.ResultFor(read.Bindings[0]), Is.EqualTo(new TransferResult(TransferStatus.Success, length, 0)));
        Assert.That(DeviceHarness.Span(dst, length).ToArray(), Is.EqualTo(DeviceHarness.Span(src, length).ToArray()));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void Schedule_FromManyThreadsAtOnce_EveryBindingNotifiedOnce(DeviceSchedulerKind scheduler)
    {
        // Contract: Schedule is thread-safe; concurrent requesters (the io_uring path wakes its completion thread
        // through the eventfd) all get their notifications.
        using var h = DeviceHarness.Create(scheduler, TestDevice.File);
        const int threads = 4;
        const int perThread = 200;
        var log = new NotificationLog(threads * perThread);
        nint buf = h.Alloc(threads * perThread * 512);
        var all = new List<RandomAccessRequest>[threads];
        for (int t = 0; t < threads; t++)
        {
            all[t] = [];
            for (int i = 0; i < perThread; i++)
            {
                int n = t * perThread + i;
                all[t].Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Write, (long)n * 512)
                    .Add(new RandomAccessRequestBinding(buf + n * 512, 512, log.Callback)));
            }
        }

        Parallel.For(0, threads, t =>
        {
            foreach (RandomAccessRequest r in all[t])
            {
                h.Scheduler.Schedule(r);
                if ((r.Offset & 0xFFF) == 0)
                {
                    Thread.Yield();
                }
            }
        });

        Assert.That(log.Wait(), Is.True);
        Assert.That(log.TotalNotifications, Is.EqualTo(threads * perThread));
        Assert.That(log.Results.Select(r => r.Status), Is.All.EqualTo(TransferStatus.Success));
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void UnregisterDevice_ManyBindingsInFlight_ReturnsOnlyAfterEveryNotification(DeviceSchedulerKind scheduler)
    {
        // Contract: UnregisterDevice drains: when it returns true, every binding of the device scheduled before it has
        // been notified and its handler has returned. (Before issue 19 it only checked for null and returned at once.)
        using var h = DeviceHarness.Create(scheduler, TestDevice.FileDirect);
        h.Scheduler.RegisterDevice(h.Device);
        const int requests = 300;
        int handled = 0;
        nint buf = h.Alloc(requests * DeviceHarness.Block);
        var all = new List<RandomAccessRequest>();
        for (int i = 0; i < requests; i++)
        {
            all.Add(new RandomAccessRequest(h.Device, RandomAccessOperation.Read, (long)(i % 200) * DeviceHarness.Block)
                .Add(new RandomAccessRequestBinding(buf + i * DeviceHarness.Block, DeviceHarness.Block, (_, _) => Interlocked.Increment(ref handled))));
        }

        foreach (RandomAccessRequest r in all)
        {
            h.Scheduler.Schedule(r);
        }

        bool drained = h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout);

        Assert.That(drained, Is.True);
        Assert.That(Volatile.Read(ref handled), Is.EqualTo(requests), "UnregisterDevice returned before every handler ran");
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void UnregisterDevice_HandlerStillRunning_TimesOutRefusesNewRequestsThenDrains(DeviceSchedulerKind scheduler)
    {
        // Contract: while a binding of the device is unfinished, UnregisterDevice returns false at its timeout and the
        // device stays refusing (Schedule throws InvalidOperationException); other devices are still accepted; once
        // the handler returns, a second call drains, and the device (now unregistered) is served again.
        using var h = DeviceHarness.Create(scheduler, TestDevice.File);
        using var other = new RandomAccessNullDevice(DeviceHarness.DeviceSize);
        h.Scheduler.RegisterDevice(h.Device);
        using var entered = new ManualResetEventSlim();
        using var gate = new ManualResetEventSlim();
        bool handlerReturned = false;
        var blocker = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, (_, _) =>
            {
                entered.Set();
                gate.Wait(DeviceHarness.Timeout);
                Volatile.Write(ref handlerReturned, true);
            }));
        h.Scheduler.Schedule(blocker);
        Assert.That(entered.Wait(DeviceHarness.Timeout), Is.True);

        bool early = h.Scheduler.UnregisterDevice(h.Device, TimeSpan.FromMilliseconds(50));
        var refused = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block));
        var log = new NotificationLog(2);
        var elsewhere = new RandomAccessRequest(other, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));

        Assert.That(early, Is.False, "the handler is still blocked, so the drain cannot have finished");
        Assert.That(() => h.Scheduler.Schedule(refused), Throws.InvalidOperationException.With.Message.Contains("unregistered"));
        Assert.That(refused.Bindings[0].IsInFlight, Is.False, "a refused request must leave its bindings idle");
        Assert.That(() => h.Scheduler.Schedule(elsewhere), Throws.Nothing);
        gate.Set();
        Assert.That(h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout), Is.True);
        Assert.That(Volatile.Read(ref handlerReturned), Is.True);
        var again = new RandomAccessRequest(h.Device, RandomAccessOperation.Read, 0)
            .Add(new RandomAccessRequestBinding(h.Alloc(DeviceHarness.Block), DeviceHarness.Block, log.Callback));
        h.Scheduler.Schedule(again);
        Assert.That(log.Wait(), Is.True);
        Assert.That(log.ResultFor(again.Bindings[0]).IsComplete, Is.True);
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void RegisterDevice_Misuse_Throws(DeviceSchedulerKind scheduler)
    {
        // Contract: registering twice, unregistering an unregistered device, a null device and a disposed device are
        // misuse; a timeout must be finite and not negative.
        using var h = DeviceHarness.Create(scheduler, TestDevice.Null);
        var disposed = new RandomAccessNullDevice(10);
        disposed.Dispose();

        Assert.That(() => h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout), Throws.InvalidOperationException);
        h.Scheduler.RegisterDevice(h.Device);
        Assert.That(() => h.Scheduler.RegisterDevice(h.Device), Throws.InvalidOperationException);
        Assert.That(() => h.Scheduler.RegisterDevice(null!), Throws.ArgumentNullException);
        Assert.That(() => h.Scheduler.RegisterDevice(disposed), Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(() => h.Scheduler.UnregisterDevice(h.Device, Timeout.InfiniteTimeSpan), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout), Is.True);
        h.Scheduler.Dispose();
        Assert.That(() => h.Scheduler.RegisterDevice(h.Device), Throws.InstanceOf<ObjectDisposedException>());
    }

    [TestCaseSource(nameof(AllSchedulers))]
    public void UnregisterDevice_FromNotificationHandler_ThrowsInvalidOperation(DeviceSchedulerKind scheduler)
    {
        // Contract: a handler cannot drain its own scheduler (it would wait for its own notification to return).
        using var h = DeviceHarness.Create(scheduler, TestDevice.Null);
        h.Scheduler.RegisterDevice(h.Device);

        Exception? caught = CaughtInHandler(h, () => h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout));

        Assert.That(caught, Is.InstanceOf<InvalidOperationException>());
        Assert.That(h.Scheduler.UnregisterDevice(h.Device, DeviceHarness.Timeout), Is.True);
    }
}
