using System.Buffers;

namespace SharedStore.Devices;

/// <summary>
/// One transfer between a device range and one or more memory spans (scatter/gather). The bindings cover the device
/// range back to back: binding <c>i</c> starts at <see cref="Offset"/> plus the lengths of bindings <c>0..i-1</c>.
/// </summary>
/// <remarks>The requester owns the request: it must keep the request, its bindings and their memory valid and
/// unmodified from <see cref="IDeviceAccessScheduler.Schedule"/> until every binding has been notified. Schedulers
/// never free or pool requests. A request may be scheduled again once all its bindings have been notified.</remarks>
public sealed class RandomAccessRequest
{
    /// <summary>Creates a request without bindings; add them with <see cref="Add(RandomAccessRequestBinding)"/>.</summary>
    /// <param name="device">The device to transfer to or from.</param>
    /// <param name="operation">READ or WRITE.</param>
    /// <param name="offset">The device byte offset of the first binding.</param>
    public RandomAccessRequest(IRandomAccessDevice device, RandomAccessOperation operation, long offset)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
        Operation = operation;
        Offset = offset;
    }

    /// <summary>The device to transfer to or from.</summary>
    public IRandomAccessDevice Device { get; set; }

    /// <summary>READ (device to memory) or WRITE (memory to device).</summary>
    public RandomAccessOperation Operation { get; set; }

    /// <summary>0-based device byte offset of the first binding.</summary>
    public long Offset { get; set; }

    /// <summary>Total bytes to transfer: the sum of the binding lengths.</summary>
    public long ByteCount
    {
        get
        {
            long total = 0;
            foreach (RandomAccessRequestBinding b in Bindings)
            {
                total += b.Length;
            }

            return total;
        }
    }

    /// <summary>The memory spans, in device order.</summary>
    public List<RandomAccessRequestBinding> Bindings { get; } = [];

    /// <summary>Free for the requester (the schedulers never read it).</summary>
    public object? State { get; set; }

    /// <summary>Appends a binding and returns this request, for chaining.</summary>
    /// <param name="binding">The binding to append.</param>
    /// <returns>This request.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="binding"/> is null.</exception>
    public RandomAccessRequest Add(RandomAccessRequestBinding binding)
    {
        ArgumentNullException.ThrowIfNull(binding);
        Bindings.Add(binding);
        return this;
    }
}

/// <summary>
/// One memory span of a <see cref="RandomAccessRequest"/> and its completion notification. Override
/// <see cref="OnTransferCompleted"/> or pass a callback; each binding is notified exactly once per schedule.
/// </summary>
/// <remarks>
/// <para><b>Threading.</b> Notifications never run inside <see cref="IDeviceAccessScheduler.Schedule"/>. With
/// <see cref="ThreadPoolScheduler"/> they run on one of its worker threads; with <see cref="IoUringScheduler"/> they
/// run on its single completion thread, so a slow handler delays every other completion of that scheduler. Handlers
/// may schedule new requests (that is how a queue depth is kept), must not block on other transfers of the same
/// scheduler, must not dispose the scheduler, and must not throw (an escaping exception is caught and counted in
/// <see cref="IDeviceAccessScheduler.NotificationFaults"/>).</para>
/// <para>A binding made from <see cref="Memory{T}"/> is pinned by the scheduler from Schedule until just before its
/// notification runs.</para>
/// </remarks>
public class RandomAccessRequestBinding
{
    // Binding states. Transitions are CAS so completion, cancellation and shutdown race to exactly one winner.
    internal const int StateIdle = 0;
    internal const int StateQueued = 1;
    internal const int StateRunning = 2;
    internal const int StateCancelRequested = 3;

    private readonly Action<RandomAccessRequestBinding, TransferResult>? _callback;
    private nint _address;
    private int _length;
    private Memory<byte> _memory;
    private MemoryHandle _pin;
    private bool _usesMemory;
    internal int _state;

    // Scheduler bookkeeping, touched only by the scheduler that owns the binding while it is in flight.
    internal int Progress;
    internal TransferStatus PreStatus;
    internal ulong UserData;
    internal bool IsNop;
    internal RandomAccessRequestBinding? NextInChain; // ThreadPoolScheduler: the next binding of a chained request
    internal bool HoldsFdRef;
    internal DeviceRegistration? Registration; // set when the device is registered with the scheduler; released after notification

    /// <summary>Binds raw memory the caller keeps valid (for example inside a mapped region).</summary>
    /// <param name="address">Start of the span.</param>
    /// <param name="length">Length of the span in bytes.</param>
    /// <param name="callback">Called with the result, or null to rely on an override of <see cref="OnTransferCompleted"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    public RandomAccessRequestBinding(nint address, int length, Action<RandomAccessRequestBinding, TransferResult>? callback = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _address = address;
        _length = length;
        _callback = callback;
    }

    /// <summary>Binds managed or native memory; the scheduler pins it for the transfer.</summary>
    /// <param name="memory">The span to read into or write from.</param>
    /// <param name="callback">Called with the result, or null to rely on an override of <see cref="OnTransferCompleted"/>.</param>
    public RandomAccessRequestBinding(Memory<byte> memory, Action<RandomAccessRequestBinding, TransferResult>? callback = null)
    {
        _memory = memory;
        _length = memory.Length;
        _usesMemory = true;
        _callback = callback;
    }

    /// <summary>The span's address: the raw address, or for memory bindings the pinned address while in flight.</summary>
    public nint Address => _address;

    /// <summary>Bytes to transfer for this binding.</summary>
    public int Length => _length;

    /// <summary>The request this binding was last scheduled with (null before the first schedule).</summary>
    public RandomAccessRequest? Request { get; private set; }

    /// <summary>The device offset of this binding in its last schedule.</summary>
    public long DeviceOffset { get; private set; }

    /// <summary>Free for the requester (the schedulers never read it).</summary>
    public object? State { get; set; }

    /// <summary>True between Schedule and the start of the notification.</summary>
    public bool IsInFlight => Volatile.Read(ref _state) != StateIdle;

    /// <summary>Points an idle raw binding at another span, so bindings can be reused without allocation.</summary>
    /// <param name="address">Start of the span.</param>
    /// <param name="length">Length in bytes.</param>
    /// <exception cref="InvalidOperationException">The binding is in flight.</exception>
    public void Reset(nint address, int length)
    {
        ThrowIfInFlight();
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _address = address;
        _length = length;
        _memory = default;
        _usesMemory = false;
    }

    /// <summary>Points an idle binding at another managed span.</summary>
    /// <param name="memory">The span.</param>
    /// <exception cref="InvalidOperationException">The binding is in flight.</exception>
    public void Reset(Memory<byte> memory)
    {
        ThrowIfInFlight();
        _memory = memory;
        _length = memory.Length;
        _address = 0;
        _usesMemory = true;
    }

    /// <summary>Called once per schedule with the outcome; the default invokes the constructor's callback.</summary>
    /// <param name="result">Bytes transferred or the error.</param>
    protected internal virtual void OnTransferCompleted(TransferResult result) => _callback?.Invoke(this, result);

    private void ThrowIfInFlight()
    {
        if (IsInFlight)
        {
            DeviceThrowHelper.ThrowInvalidOperation("The binding is in flight; wait for its notification before changing it.");
        }
    }

    /// <summary>Claims the binding for a schedule: Idle to Queued, pinning memory. False when already in flight.</summary>
    internal unsafe bool TryBegin(RandomAccessRequest request, long deviceOffset)
    {
        // CAS: the same binding handed to two Schedule calls at once must be accepted once.
        if (Interlocked.CompareExchange(ref _state, StateQueued, StateIdle) != StateIdle)
        {
            return false;
        }

        Request = request;
        DeviceOffset = deviceOffset;
        Progress = 0;
        PreStatus = TransferStatus.Success;
        UserData = 0;
        if (_usesMemory)
        {
            _pin = _memory.Pin();
            _address = (nint)_pin.Pointer;
        }

        return true;
    }

    /// <summary>Queued to Running: the transfer may start. False when cancellation won.</summary>
    internal bool TryStart() =>
        Interlocked.CompareExchange(ref _state, StateRunning, StateQueued) == StateQueued;

    /// <summary>Queued to CancelRequested. False when the transfer already started or finished.</summary>
    internal bool TryRequestCancel() =>
        Interlocked.CompareExchange(ref _state, StateCancelRequested, StateQueued) == StateQueued;

    internal int CurrentState => Volatile.Read(ref _state);

    /// <summary>Unpins, returns to Idle and notifies, then releases the device registration's count. Runs once per
    /// schedule, by whichever path won the state race.</summary>
    internal void Complete(TransferResult result, ref int faults, bool notify = true)
    {
        if (_usesMemory)
        {
            _pin.Dispose();
            _pin = default;
        }

        // Read before the handler runs: it may schedule this binding again, which sets a new registration.
        DeviceRegistration? registration = Registration;
        Registration = null;
        result = result.ForLength(_length);

        // Volatile: Idle must be visible before the handler runs, because the handler may schedule this binding again.
        Volatile.Write(ref _state, StateIdle);
        if (notify)
        {
            try
            {
                OnTransferCompleted(result);
            }
            catch (Exception)
            {
                // A handler exception must not kill the scheduler thread and lose every later notification.
                Interlocked.Increment(ref faults);
            }
        }

        // After the handler: a finished UnregisterDevice then means no handler of the device is still running.
        registration?.Release();
    }
}
