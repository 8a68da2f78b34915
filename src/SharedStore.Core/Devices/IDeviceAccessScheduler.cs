namespace SharedStore.Devices;

/// <summary>The scheduler implementations <see cref="DeviceSchedulers.Create"/> can build.</summary>
public enum DeviceSchedulerKind
{
    /// <summary>Let the factory choose per <see cref="DeviceMode"/> (see docs/DEVICES.md for the measurements).</summary>
    Auto,

    /// <summary><see cref="ThreadPoolScheduler"/>: dedicated threads doing pread/pwrite.</summary>
    ThreadPool,

    /// <summary><see cref="IoUringScheduler"/>: io_uring with one completion thread.</summary>
    IoUring,
}

/// <summary>
/// Processes <see cref="RandomAccessRequest"/>s asynchronously and notifies each binding once. This is the only way
/// data reaches a device. See <see cref="RandomAccessRequestBinding"/> for the threading of notifications.
/// </summary>
public interface IDeviceAccessScheduler : IDisposable, IAsyncDisposable
{
    /// <summary>Which implementation this is.</summary>
    DeviceSchedulerKind Kind { get; }

    /// <summary>Why this scheduler was chosen (set by <see cref="DeviceSchedulers"/>, e.g. the reason io_uring was
    /// not used), or a plain description when it was constructed directly.</summary>
    string SelectionReason { get; }

    /// <summary>Bindings scheduled and not yet notified.</summary>
    int InFlight { get; }

    /// <summary>Notification handlers that threw (the exception was swallowed to keep other notifications flowing).</summary>
    int NotificationFaults { get; }

    /// <summary>
    /// Starts the transfer of every binding of <paramref name="request"/> and returns without waiting. Device
    /// problems (closed or read-only device, bad offset, misaligned direct I/O, kernel errors) are reported through
    /// the affected bindings only; other bindings of the same request still transfer and are notified.
    /// </summary>
    /// <param name="request">The request; the caller keeps it valid until every binding is notified.</param>
    /// <exception cref="ArgumentNullException"><paramref name="request"/> is null.</exception>
    /// <exception cref="ArgumentException">The request has no bindings, or its device is not a <see cref="RandomAccessDevice"/>.</exception>
    /// <exception cref="InvalidOperationException">A binding is already in flight, or the device is being
    /// unregistered from this scheduler (<see cref="UnregisterDevice"/>).</exception>
    /// <exception cref="ObjectDisposedException">The scheduler has been disposed.</exception>
    void Schedule(RandomAccessRequest request);

    /// <summary>Best-effort cancellation of the request's bindings that have not completed. Cancelled bindings are
    /// notified with <see cref="TransferStatus.Cancelled"/>; the others complete normally. Returns immediately.</summary>
    /// <param name="request">A request previously scheduled.</param>
    /// <exception cref="ArgumentNullException"><paramref name="request"/> is null.</exception>
    void Cancel(RandomAccessRequest request);

    /// <summary>
    /// Registers <paramref name="device"/> with this scheduler. Registration is optional: an unregistered device is
    /// served all the same. A registered one is counted: the scheduler knows which of its bindings are still in
    /// flight, which is what <see cref="UnregisterDevice"/> drains.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentException">The device does not derive from <see cref="RandomAccessDevice"/>.</exception>
    /// <exception cref="InvalidOperationException">The device is already registered with this scheduler.</exception>
    /// <exception cref="ObjectDisposedException">The device or the scheduler is disposed.</exception>
    void RegisterDevice(IRandomAccessDevice device);

    /// <summary>
    /// Ends a registration: from the call on, <see cref="Schedule"/> refuses requests for the device (it throws
    /// <see cref="InvalidOperationException"/>); then waits until every binding of the device scheduled here before has
    /// been notified and its handler has returned. Once this returns true, the scheduler no longer touches the device
    /// or those bindings' memory, so the caller may dispose them; the device is unregistered and, like any
    /// unregistered device, may be scheduled (or registered) again.
    /// </summary>
    /// <param name="device">A device registered with this scheduler.</param>
    /// <param name="timeout">How long to wait for the bindings in flight.</param>
    /// <returns>True when drained; false when <paramref name="timeout"/> passed first, in which case the device stays
    /// registered and refusing, and a later call continues the wait.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="ArgumentException">The device does not derive from <see cref="RandomAccessDevice"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative or infinite.</exception>
    /// <exception cref="InvalidOperationException">The device is not registered with this scheduler, or the call comes
    /// from one of the scheduler's notification handlers (it would wait for itself).</exception>
    bool UnregisterDevice(IRandomAccessDevice device, TimeSpan timeout);
}
