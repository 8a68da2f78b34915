using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const int EIO = 5;
        internal const int ENOSYS = 38;
        internal const int EPERM = 1;
        internal const int ECANCELED = 125;
        internal const int EALREADY = 114;
        internal const int ENOTTY = 25;

        internal const int POSIX_FADV_NORMAL = 0;
        internal const int POSIX_FADV_RANDOM = 1;
        internal const int POSIX_FADV_SEQUENTIAL = 2;
        internal const int POSIX_FADV_DONTNEED = 4;

        internal const int AT_FDCWD = -100;
        internal const int AT_EMPTY_PATH = 0x1000;

        internal const uint STATX_TYPE = 0x0001;
        internal const uint STATX_MODE = 0x0002;
        internal const uint STATX_UID = 0x0008;
        internal const uint STATX_GID = 0x0010;
        internal const uint STATX_SIZE = 0x0200;
        internal const uint STATX_DIOALIGN = 0x2000;

        internal const ushort S_IFMT = 0xF000;
        internal const ushort S_IFBLK = 0x6000;

        // _IO(0x12, 104): logical sector size of a block device.
        internal const nuint BLKSSZGET = 0x1268;

        /// <summary>struct statx (256 bytes). Only the fields SharedStore reads are named; offsets as in
        /// linux/stat.h.</summary>
        [StructLayout(LayoutKind.Explicit, Size = 256)]
        internal struct Statx
        {
            [FieldOffset(0)] public uint stx_mask;
            [FieldOffset(4)] public uint stx_blksize;
            [FieldOffset(16)] public uint stx_nlink;
            [FieldOffset(20)] public uint stx_uid;
            [FieldOffset(24)] public uint stx_gid;
            [FieldOffset(28)] public ushort stx_mode;
            [FieldOffset(32)] public ulong stx_ino;
            [FieldOffset(40)] public ulong stx_size;
            [FieldOffset(136)] public uint stx_dev_major;
            [FieldOffset(140)] public uint stx_dev_minor;
            [FieldOffset(152)] public uint stx_dio_mem_align;
            [FieldOffset(156)] public uint stx_dio_offset_align;
        }

        [LibraryImport(Name, EntryPoint = "pread64", SetLastError = true)]
        internal static partial nint pread(int fd, void* buf, nuint count, long offset);

        [LibraryImport(Name, EntryPoint = "pwrite64", SetLastError = true)]
        internal static partial nint pwrite(int fd, void* buf, nuint count, long offset);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int fdatasync(int fd);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int fsync(int fd);

        /// <summary>posix_fadvise returns the error number instead of setting errno.</summary>
        [LibraryImport(Name, EntryPoint = "posix_fadvise64")]
        internal static partial int posix_fadvise(int fd, long offset, long len, int advice);

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int statx(int dirfd, string path, int flags, uint mask, Statx* buf);

        [LibraryImport(Name, EntryPoint = "ioctl", SetLastError = true)]
        internal static partial int ioctl_int(int fd, nuint request, int* arg);

        /// <summary>pread that retries EINTR. Returns bytes read (0 at end of file) or -errno.</summary>
        internal static long PRead(int fd, void* buf, nuint count, long offset)
        {
            while (true)
            {
                nint r = pread(fd, buf, count, offset);
                if (r >= 0)
                {
                    return r;
                }

                int errno = LastErrno;
                if (errno != EINTR)
                {
                    return -errno;
                }
            }
        }

        /// <summary>pwrite that retries EINTR. Returns bytes written or -errno.</summary>
        internal static long PWrite(int fd, void* buf, nuint count, long offset)
        {
            while (true)
            {
                nint r = pwrite(fd, buf, count, offset);
                if (r >= 0)
                {
                    return r;
                }

                int errno = LastErrno;
                if (errno != EINTR)
                {
                    return -errno;
                }
            }
        }
    }
}
