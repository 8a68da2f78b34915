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
    /// <exception cref="InvalidOperationException">A binding is already in flight.</exception>
    /// <exception cref="ObjectDisposedException">The scheduler has been disposed.</exception>
    void Schedule(RandomAccessRequest request);

    /// <summary>Best-effort cancellation of the request's bindings that have not completed. Cancelled bindings are
    /// notified with <see cref="TransferStatus.Cancelled"/>; the others complete normally. Returns immediately.</summary>
    /// <param name="request">A request previously scheduled.</param>
    /// <exception cref="ArgumentNullException"><paramref name="request"/> is null.</exception>
    void Cancel(RandomAccessRequest request);

    /// <summary>Declares that <paramref name="device"/> will be used with this scheduler. Optional; a scheduler may use
    /// it to prepare per-device state.</summary>
    /// <param name="device">The device.</param>
    void RegisterDevice(IRandomAccessDevice device);

    /// <summary>Reverses <see cref="RegisterDevice"/>; call after the device's transfers have completed.</summary>
    /// <param name="device">The device.</param>
    void UnregisterDevice(IRandomAccessDevice device);
}
