using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    /// <summary>The *at() calls: a broker that writes into a folder another user owns names every file relative to a
    /// descriptor of that folder (opened once, checked on the descriptor), never by path, so no rename of the folder or
    /// of a folder above it, and no symlink put in its place, can change where the file goes (docs/ARCHITECTURE.md §11).
    /// Also the user database lookup that gives a uid its groups when no socket carries them (restore).</summary>
    internal static unsafe partial class Libc
    {
        internal const int O_NONBLOCK = 0x800;

        internal const int F_GETFL = 3;
        internal const int F_SETFL = 4;

        internal const int AT_SYMLINK_NOFOLLOW = 0x100;

        /// <summary>renameat2: fail with EEXIST instead of replacing the target.</summary>
        internal const uint RENAME_NOREPLACE = 1;

        /// <summary>renameat2: swap the two names atomically (both must exist; either may be a folder or a symlink).</summary>
        internal const uint RENAME_EXCHANGE = 2;

        internal const uint STATX_NLINK = 0x0004;
        internal const uint STATX_INO = 0x0100;

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int openat(int dirfd, string path, int flags, int mode);

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int unlinkat(int dirfd, string path, int flags);

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int renameat2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

        /// <summary>struct passwd (x86_64 and aarch64 glibc): only what <see cref="UserGroups"/> reads is named.</summary>
        [StructLayout(LayoutKind.Explicit, Size = 48)]
        internal struct Passwd
        {
            [FieldOffset(0)] public nint pw_name;
            [FieldOffset(20)] public uint pw_gid;
        }

        /// <summary>getpwuid_r returns the error number (0 with a null result: no such user).</summary>
        [LibraryImport(Name)]
        internal static partial int getpwuid_r(uint uid, Passwd* pwd, byte* buf, nuint buflen, Passwd** result);

        /// <summary>-1 when <paramref name="ngroups"/> was too small (it is then set to the number needed).</summary>
        [LibraryImport(Name)]
        internal static partial int getgrouplist(nint user, uint group, uint* groups, int* ngroups);

        /// <summary>openat that retries EINTR. Returns the descriptor or -errno.</summary>
        internal static int OpenAt(int dirfd, string path, int flags, int mode)
        {
            while (true)
            {
                int fd = openat(dirfd, path, flags, mode);
                if (fd >= 0)
                {
                    return fd;
                }

                int errno = LastErrno;
                if (errno != EINTR)
                {
                    return -errno;
                }
            }
        }

        /// <summary>A uid's primary group and every group the user database lists it in (getpwuid_r, getgrouplist);
        /// null when the uid has no user entry (or the lookup failed).</summary>
        internal static (uint Gid, uint[] Groups)? UserGroups(uint uid)
        {
            Passwd pw;
            Passwd* found = null;
            byte[] buf = new byte[1 << 14]; // 16384: glibc's sysconf(_SC_GETPW_R_SIZE_MAX) suggests 1024
            fixed (byte* b = buf)
            {
                if (getpwuid_r(uid, &pw, b, (nuint)buf.Length, &found) != 0 || found is null)
                {
                    return null;
                }

                int n = 64;
                while (true)
                {
                    uint[] groups = new uint[n];
                    int count = n;
                    fixed (uint* g = groups)
                    {
                        if (getgrouplist(pw.pw_name, pw.pw_gid, g, &count) >= 0)
                        {
                            return (pw.pw_gid, groups[..count]);
                        }
                    }

                    if (count <= n)
                    {
                        return null;
                    }

                    n = count;
                }
            }
        }
    }
}
