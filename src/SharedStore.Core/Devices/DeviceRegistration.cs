using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// One device registered with one scheduler: counts the device's bindings scheduled there and not yet notified, and
/// lets <see cref="IDeviceAccessScheduler.UnregisterDevice"/> refuse new ones and wait for those to finish. Both
/// schedulers use this type through <see cref="SchedulerCommon"/>; the protocol lives only here.
/// </summary>
/// <remarks>
/// <para><b>Where it is kept.</b> On the device (<see cref="RandomAccessDevice"/> holds an immutable array of its
/// registrations, replaced under the device's own lock), so a Schedule finds it with a scan of that array (one entry
/// in practice) instead of a lookup in a scheduler-wide table under a lock.</para>
/// <para><b>Drain protocol.</b> Two counters-and-flags with full fences, the Dekker pattern, twice:</para>
/// <list type="number">
/// <item>Schedule: <c>Interlocked.Add(_inFlight, n)</c> (full fence), then read <c>_draining</c>. If set, undo with
/// <see cref="Release"/> and refuse. Unregister: <c>Interlocked.Exchange(_draining, 1)</c> (full fence), then read
/// <c>_inFlight</c>. So either the Schedule sees the flag and backs out, or the Unregister sees its bindings and waits
/// for them; a binding can never slip in behind a finished drain.</item>
/// <item>Completion: <c>Interlocked.Decrement(_inFlight)</c> (full fence), then, at zero, read <c>_draining</c> and
/// pulse under the monitor. Unregister reads <c>_inFlight</c> under the same monitor before it waits. Either the
/// completion sees the flag (and its pulse, taken under the monitor, can only come once the waiter has released it
/// by waiting), or the waiter's read comes after the decrement and sees zero: no lost wake-up.</item>
/// </list>
/// <para>A binding's count is released after its notification handler has returned, so a finished drain means no
/// handler of that device is still running either.</para>
/// </remarks>
[SupportedOSPlatform("linux")]
internal sealed class DeviceRegistration
{
    private readonly object _gate = new();
    private int _inFlight;
    private int _draining;

    internal DeviceRegistration(IDeviceAccessScheduler scheduler, RandomAccessDevice device)
    {
        Scheduler = scheduler;
        Device = device;
    }

    internal IDeviceAccessScheduler Scheduler { get; }

    internal RandomAccessDevice Device { get; }

    internal int InFlight => Volatile.Read(ref _inFlight);

    internal bool IsDraining => Volatile.Read(ref _draining) != 0;

    /// <summary>Counts <paramref name="count"/> new bindings; false (and nothing counted) once a drain has begun.</summary>
    internal bool TryAcquire(int count)
    {
        // Full fence before reading the flag: step 1 of the protocol.
        Interlocked.Add(ref _inFlight, count);
        if (Volatile.Read(ref _draining) != 0)
        {
            Release(count);
            return false;
        }

        return true;
    }

    /// <summary>Uncounts bindings whose notification has run (or that never started).</summary>
    internal void Release(int count = 1)
    {
        // Full fence before reading the flag: step 2 of the protocol.
        if (Interlocked.Add(ref _inFlight, -count) == 0 && Volatile.Read(ref _draining) != 0)
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>Refuses new bindings from now on and waits until the counted ones are notified.</summary>
    /// <returns>False when <paramref name="timeout"/> passed first (the registration stays draining).</returns>
    internal bool Drain(TimeSpan timeout)
    {
        // Full fence before reading the count: step 1 of the protocol.
        Interlocked.Exchange(ref _draining, 1);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_gate)
        {
            while (Volatile.Read(ref _inFlight) != 0)
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0 || !Monitor.Wait(_gate, TimeSpan.FromMilliseconds(left)))
                {
                    return Volatile.Read(ref _inFlight) == 0;
                }
            }
        }

        return true;
    }
}
