using System.Runtime.Versioning;
using System.Diagnostics;
using SharedStore.Devices;

namespace SharedStore.Bench.Devices;

/// <summary>
/// Keeps <c>depth</c> requests in flight on a scheduler for a fixed time, the way fio keeps an iodepth: each
/// completion handler picks the next offset and schedules its own request again. Nothing is allocated per I/O: the
/// requests, bindings and buffers (huge pages, from <see cref="DeviceBuffers"/>) are made once, offsets come from a
/// per-slot xorshift generator.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class QueueDepthLoop
{
    private readonly IDeviceAccessScheduler _scheduler;
    private readonly RandomAccessDevice _device;
    private readonly RandomAccessOperation _op;
    private readonly int _blockSize;
    private readonly int _depth;
    private readonly bool _sequential;
    private readonly long _blocks;
    private long _nextSequential;
    // Per-slot completion counters, 128 bytes apart: a shared counter would be one contended cache line written by
    // every worker thread on every I/O (fio keeps per-job counters too).
    private const int CounterStride = 16;
    private readonly long[] _completed;
    private long _errors;
    private int _active;
    private volatile bool _stop;
    private readonly ManualResetEventSlim _drained = new();

    public QueueDepthLoop(IDeviceAccessScheduler scheduler, RandomAccessDevice device, RandomAccessOperation op,
        int blockSize, int depth, bool sequential, long deviceSize)
    {
        _scheduler = scheduler;
        _device = device;
        _op = op;
        _blockSize = blockSize;
        _depth = depth;
        _sequential = sequential;
        _blocks = deviceSize / blockSize;
        _completed = new long[depth * CounterStride];
    }

    private long Completed()
    {
        long sum = 0;
        for (int i = 0; i < _depth; i++)
        {
            sum += Volatile.Read(ref _completed[i * CounterStride]);
        }

        return sum;
    }

    /// <summary>Runs a warm-up, then measures; returns completed operations per second.</summary>
    /// <param name="warmup">Unmeasured time first.</param>
    /// <param name="measure">Measured time.</param>
    /// <param name="given">One buffer of the block size per slot, owned by the caller; null to take them from a
    /// <see cref="DeviceBuffers"/> pool, as the library's rule for direct I/O says (docs/DEVICES.md).</param>
    public double Run(TimeSpan warmup, TimeSpan measure, nint[]? given = null)
    {
        using DeviceBuffers? pool = given is null ? new DeviceBuffers(_blockSize, _depth) : null;
        var buffers = given ?? Enumerable.Range(0, _depth).Select(i => pool![i]).ToArray();
        var requests = new RandomAccessRequest[_depth];
        var seeds = new ulong[_depth];
        for (int i = 0; i < _depth; i++)
        {
            new Span<byte>((void*)buffers[i], _blockSize).Fill((byte)i);
            seeds[i] = (ulong)(0x9E3779B97F4A7C15UL * (ulong)(i + 1));
            var request = new RandomAccessRequest(_device, _op, 0) { State = i };
            request.Add(new RandomAccessRequestBinding(buffers[i], _blockSize, OnCompleted) { State = seeds });
            requests[i] = request;
        }

        _active = _depth;
        foreach (RandomAccessRequest r in requests)
        {
            r.Offset = NextOffset(seeds, (int)r.State!);
            _scheduler.Schedule(r);
        }

        Thread.Sleep(warmup);
        long start = Completed();
        var sw = Stopwatch.StartNew();
        Thread.Sleep(measure);
        long end = Completed();
        double seconds = sw.Elapsed.TotalSeconds;
        _stop = true;
        if (!_drained.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException("requests did not drain");
        }

        if (Interlocked.Read(ref _errors) > 0)
        {
            throw new IOException($"{_errors} transfers failed during the measurement");
        }

        return (end - start) / seconds;
    }

    private long NextOffset(ulong[] seeds, int slot)
    {
        if (_sequential)
        {
            long block = Interlocked.Increment(ref _nextSequential) - 1;
            return block % _blocks * _blockSize;
        }

        // xorshift64: cheap, allocation-free, and per slot so handlers on different threads never share state.
        ulong x = seeds[slot];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seeds[slot] = x;
        return (long)(x % (ulong)_blocks) * _blockSize;
    }

    private void OnCompleted(RandomAccessRequestBinding binding, TransferResult result)
    {
        if (!result.IsComplete)
        {
            Interlocked.Increment(ref _errors);
        }

        RandomAccessRequest request = binding.Request!;
        int slot = (int)request.State!;

        // Only this slot's handler writes its counter (one request per slot), so a plain increment is enough.
        Volatile.Write(ref _completed[slot * CounterStride], _completed[slot * CounterStride] + 1);
        if (_stop)
        {
            if (Interlocked.Decrement(ref _active) == 0)
            {
                _drained.Set();
            }

            return;
        }

        request.Offset = NextOffset((ulong[])binding.State!, slot);
        _scheduler.Schedule(request);
    }
}
