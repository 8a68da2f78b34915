namespace SharedStore.Devices;

/// <summary>File-space calls the broker's durable store needs beside transfers, made on the device's own descriptor
/// (referenced for the call, like every transfer) so that no caller reaches around the device to its fd.</summary>
public sealed partial class RandomAccessFileDevice
{
    /// <summary>fallocate(0, 0, <paramref name="length"/>): reserves the file's blocks, so a full disk is an error now
    /// and not a failed write later. Returns 0 or the errno.</summary>
    internal int Preallocate(long length) =>
        WithFd(fd => Interop.Libc.fallocate(fd, 0, 0, length) == 0 ? 0 : Interop.Libc.LastErrno);

    /// <summary>posix_fadvise(POSIX_FADV_DONTNEED) over a range: starts writeback of its dirty pages without waiting,
    /// and drops only pages that are already clean. Best effort: the result is ignored.</summary>
    internal void StartWriteBack(long offset, long length) =>
        _ = WithFd(fd => Interop.Libc.posix_fadvise(fd, offset, length, Interop.Libc.POSIX_FADV_DONTNEED));
}
