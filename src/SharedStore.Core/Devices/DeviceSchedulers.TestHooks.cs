namespace SharedStore.Devices;

/// <summary>Test-only view: lets tests pretend io_uring is unavailable (a seccomp sandbox or
/// io_uring_disabled = 2 cannot be arranged inside a test process) and check the fallback.</summary>
public static partial class DeviceSchedulers
{
    internal static IDeviceAccessScheduler CreateWithProbe(DeviceSchedulerKind kind, DeviceMode mode, string? unavailableReason) =>
        CreateCore(kind, mode, 2, 64, () => unavailableReason);
}
