using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>The device kinds the contract suite runs against.</summary>
public enum TestDevice
{
    File,
    FileDirect,
    Null,
    Memory,
}

/// <summary>One scheduler and one device for a test, plus aligned native buffers; cleans everything up.</summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class DeviceHarness : IDisposable
{
    internal const int Block = 1 << 12; // 4096: a multiple of every direct-I/O alignment seen on Linux
    internal const long DeviceSize = 1 << 20; // 1 MiB
    internal static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly List<nint> _buffers = [];
    private nint _region;

    private DeviceHarness(DeviceSchedulerKind scheduler, TestDevice device, bool readOnly, int threads)
    {
        Kind = device;
        if (scheduler == DeviceSchedulerKind.IoUring && DeviceSchedulers.IoUringUnavailableReason is { } why)
        {
            Assert.Ignore($"io_uring unavailable: {why}");
        }

        Directory = Path.Combine("/var/tmp", $"sharedstore-devtests-{Environment.ProcessId}-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(Directory);
        FilePath = Path.Combine(Directory, "device.dat");
        Scheduler = scheduler == DeviceSchedulerKind.IoUring
            ? new IoUringScheduler(64)
            : new ThreadPoolScheduler(threads);
        Device = OpenDevice(readOnly);
    }

    public TestDevice Kind { get; }

    public string Directory { get; }

    public string FilePath { get; }

    public IDeviceAccessScheduler Scheduler { get; }

    public RandomAccessDevice Device { get; private set; }

    /// <summary>False for the null device, whose reads return zeros whatever was written.</summary>
    public bool StoresData => Kind != TestDevice.Null;

    public static DeviceHarness Create(DeviceSchedulerKind scheduler, TestDevice device, bool readOnly = false, int threads = 4) =>
        new(scheduler, device, readOnly, threads);

    private RandomAccessDevice OpenDevice(bool readOnly)
    {
        switch (Kind)
        {
            case TestDevice.File:
            case TestDevice.FileDirect:
                using (var create = new RandomAccessFileDevice(FilePath, DeviceMode.Create))
                {
                    create.SetSize(DeviceSize);
                }

                DeviceMode mode = (readOnly ? DeviceMode.ReadOnly : DeviceMode.None) |
                    (Kind == TestDevice.FileDirect ? DeviceMode.Direct : DeviceMode.None);
                return RandomAccessDevices.Create(DeviceKind.File, new DeviceOptions { Path = FilePath, Mode = mode });
            case TestDevice.Null:
                return RandomAccessDevices.Create(DeviceKind.Null, new DeviceOptions { Size = DeviceSize });
            default:
                _region = (nint)NativeMemory.AlignedAlloc((nuint)DeviceSize, Block);
                new Span<byte>((void*)_region, (int)DeviceSize).Clear();
                return RandomAccessDevices.Create(DeviceKind.MemoryRegion, new DeviceOptions
                {
                    BaseAddress = _region, Size = DeviceSize, Owner = this, ReadOnly = readOnly,
                });
        }
    }

    /// <summary>Shrinks or grows the device to <paramref name="size"/> (memory regions are recreated shorter).</summary>
    public void Resize(long size)
    {
        if (Kind == TestDevice.Memory)
        {
            Device.Dispose();
            Device = new MemoryRegionDevice(_region, size, this);
        }
        else if (Kind is TestDevice.File or TestDevice.FileDirect)
        {
            using var d = new RandomAccessFileDevice(FilePath, DeviceMode.None);
            d.SetSize(size);
        }
        else
        {
            Device.SetSize(size);
        }
    }

    /// <summary>A zeroed buffer aligned to 4096 bytes, freed with the harness.</summary>
    public nint Alloc(int size)
    {
        nint p = (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(size, 1), Block);
        new Span<byte>((void*)p, size).Clear();
        _buffers.Add(p);
        return p;
    }

    public static Span<byte> Span(nint p, int length) => new((void*)p, length);

    public static void Fill(nint p, int length, int seed)
    {
        Span<byte> s = Span(p, length);
        for (int i = 0; i < s.Length; i++)
        {
            s[i] = (byte)(seed * 31 + i * 7 + (i >> 8));
        }
    }

    public void Dispose()
    {
        Scheduler.Dispose();
        Device.Dispose();
        foreach (nint p in _buffers)
        {
            NativeMemory.AlignedFree((void*)p);
        }

        if (_region != 0)
        {
            NativeMemory.AlignedFree((void*)_region);
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Records every notification, counting per binding, and lets a test wait for an expected total.</summary>
internal sealed class NotificationLog
{
    private readonly ConcurrentDictionary<RandomAccessRequestBinding, int> _counts = new();
    private readonly ConcurrentDictionary<RandomAccessRequestBinding, TransferResult> _results = new();
    private readonly CountdownEvent _done;

    public NotificationLog(int expected) => _done = new CountdownEvent(expected);

    public Action<RandomAccessRequestBinding, TransferResult> Callback => (b, r) =>
    {
        _counts.AddOrUpdate(b, 1, (_, c) => c + 1);
        _results[b] = r;
        if (!_done.IsSet)
        {
            _done.Signal();
        }
    };

    public bool Wait() => _done.Wait(DeviceHarness.Timeout);

    public int CountFor(RandomAccessRequestBinding b) => _counts.TryGetValue(b, out int c) ? c : 0;

    public TransferResult ResultFor(RandomAccessRequestBinding b) => _results[b];

    public IEnumerable<TransferResult> Results => _results.Values;

    public int TotalNotifications => _counts.Values.Sum();
}
