using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const int O_RDONLY = 0x0;
        internal const int O_WRONLY = 0x1;
        internal const int O_RDWR = 0x2;
        internal const int O_CREAT = 0x40;
        internal const int O_EXCL = 0x80;
        internal const int O_TRUNC = 0x200;
        internal const int O_CLOEXEC = 0x80000;
        internal const int O_DIRECT = 0x4000;

        internal const int LOCK_EX = 2;
        internal const int LOCK_NB = 4;
        internal const int LOCK_UN = 8;

        internal const int F_GETFD = 1;
        internal const int F_SETFD = 2;
        internal const int FD_CLOEXEC = 1;

        [LibraryImport(Name, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int open(string path, int flags, int mode);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int flock(int fd, int operation);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int fcntl(int fd, int cmd, int arg);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int ftruncate(int fd, long length);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int fallocate(int fd, int mode, long offset, long len);

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int unlink(string path);

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int chmod(string path, int mode);
    }
}

/// <summary>Owns one Linux file descriptor; closing is idempotent and retried on EINTR never (close must not be
/// retried on Linux: the descriptor is released even when close reports EINTR).</summary>
internal sealed class SafeFd : SafeHandle
{
    public SafeFd() : base(new IntPtr(-1), ownsHandle: true) { }

    public SafeFd(int fd, bool ownsHandle = true) : base(new IntPtr(-1), ownsHandle) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw descriptor. Valid only while this handle is alive (use DangerousAddRef around syscalls
    /// that may race with Dispose).</summary>
    public int Fd => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Interop.Libc.close((int)handle.ToInt64()) == 0;
}
