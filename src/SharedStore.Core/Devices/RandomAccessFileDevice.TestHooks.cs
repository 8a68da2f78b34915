namespace SharedStore.Devices;

/// <summary>Test-only view: caps the bytes one pread/pwrite may move, to force the short transfers that real disks
/// rarely produce, so the looping in <see cref="Transfer"/> is exercised (thread-pool scheduler path).</summary>
public sealed partial class RandomAccessFileDevice
{
    internal int MaxBytesPerCall { get; set; } = int.MaxValue;
}
