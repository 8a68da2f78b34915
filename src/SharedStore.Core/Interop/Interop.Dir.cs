using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    /// <summary>Directories, ownership and the process session: what a broker needs to make its own folders safely
    /// (mkdir, then open with O_NOFOLLOW and check/change the folder through that descriptor, never by path again).</summary>
    internal static unsafe partial class Libc
    {
        internal const int O_DIRECTORY = 0x10000;
        internal const int O_NOFOLLOW = 0x20000;
        internal const int O_PATH = 0x200000;

        internal const int ENOTDIR = 20;
        internal const int ELOOP = 40;

        internal const ushort S_IFDIR = 0x4000;
        internal const ushort S_IFLNK = 0xA000;
        internal const ushort S_IFREG = 0x8000;
        internal const ushort S_ISVTX = 0x200; // sticky: only a file's owner may remove it from the folder
        internal const ushort S_IWGRP = 0x10;
        internal const ushort S_IWOTH = 0x2;

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int mkdir(string path, int mode);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int fchmod(int fd, int mode);

        [LibraryImport(Name)]
        internal static partial uint geteuid();

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int setsid();

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int dup2(int oldfd, int newfd);

        /// <summary>statx of an open descriptor (AT_EMPTY_PATH): the object itself, whatever its path now names.</summary>
        internal static int FStatx(int fd, uint mask, Statx* buf) => statx(fd, "", AT_EMPTY_PATH, mask, buf);
    }
}
