using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const int AF_UNIX = 1;
        internal const int SOCK_STREAM = 1;
        internal const int SOCK_SEQPACKET = 5;
        internal const int SOCK_CLOEXEC = 0x80000;
        internal const int SOL_SOCKET = 1;
        internal const int SO_PEERCRED = 17;
        internal const int SO_PEERGROUPS = 59;
        internal const int SO_SNDBUF = 7;
        internal const int SO_RCVBUF = 8;
        internal const int SO_RCVTIMEO = 20;
        internal const int SO_SNDTIMEO = 21;

        /// <summary>struct timeval (x86-64 / arm64: two longs).</summary>
        internal struct Timeval
        {
            public long tv_sec;
            public long tv_usec;
        }
        internal const int SCM_RIGHTS = 1;
        internal const int MSG_NOSIGNAL = 0x4000;
        internal const int MSG_CMSG_CLOEXEC = 0x40000000;
        internal const int MSG_TRUNC = 0x20;
        internal const int MSG_PEEK = 0x2;
        internal const int MSG_DONTWAIT = 0x40;
        internal const int MSG_CTRUNC = 0x08;
        internal const int SHUT_RDWR = 2;

        internal const int EMSGSIZE = 90;
        internal const int ENOBUFS = 105;
        internal const int ENOTCONN = 107;

        /// <summary>struct sockaddr_un: sun_family then a 108-byte path.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct SockaddrUn
        {
            public ushort sun_family;
            public fixed byte sun_path[108];
        }

        /// <summary>struct ucred from SO_PEERCRED.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct Ucred
        {
            public int pid;
            public uint uid;
            public uint gid;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct Iovec
        {
            public void* iov_base;
            public nuint iov_len;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct Msghdr
        {
            public void* msg_name;
            public uint msg_namelen;
            public Iovec* msg_iov;
            public nuint msg_iovlen;
            public void* msg_control;
            public nuint msg_controllen;
            public int msg_flags;
        }

        /// <summary>struct cmsghdr header (the data follows, aligned to 8 bytes).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct Cmsghdr
        {
            public nuint cmsg_len;
            public int cmsg_level;
            public int cmsg_type;
        }

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int socket(int domain, int type, int protocol);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int bind(int fd, SockaddrUn* addr, uint len);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int listen(int fd, int backlog);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int accept4(int fd, void* addr, void* len, int flags);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int connect(int fd, SockaddrUn* addr, uint len);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int shutdown(int fd, int how);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial nint sendmsg(int fd, Msghdr* msg, int flags);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial nint recvmsg(int fd, Msghdr* msg, int flags);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int getsockopt(int fd, int level, int name, void* value, uint* len);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int setsockopt(int fd, int level, int name, void* value, uint len);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial nint recv(int fd, void* buf, nuint len, int flags);

        /// <summary>Fills a sockaddr_un; throws ArgumentException when the path does not fit (108 bytes with NUL).</summary>
        internal static uint MakeSockaddr(string path, out SockaddrUn addr)
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(path);
            if (bytes.Length >= 108)
            {
                throw new ArgumentException($"Unix socket path is {bytes.Length} bytes; the limit is 107: {path}", nameof(path));
            }

            addr = default;
            addr.sun_family = AF_UNIX;
            fixed (byte* dst = addr.sun_path)
            {
                bytes.CopyTo(new Span<byte>(dst, 108));
            }

            return (uint)(sizeof(ushort) + bytes.Length + 1);
        }
    }
}
