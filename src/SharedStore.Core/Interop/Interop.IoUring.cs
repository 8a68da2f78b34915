using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    /// <summary>io_uring through raw system calls (no liburing). Numbers and layouts are x86_64, spelled as in
    /// linux/io_uring.h.</summary>
    internal static unsafe partial class IoUring
    {
        internal const long SYS_io_uring_setup = 425;
        internal const long SYS_io_uring_enter = 426;
        internal const long SYS_io_uring_register = 427;

        internal const uint IORING_SETUP_IOPOLL = 1U << 0;
        internal const uint IORING_SETUP_SQPOLL = 1U << 1;
        internal const uint IORING_SETUP_CQSIZE = 1U << 3;
        internal const uint IORING_SETUP_CLAMP = 1U << 4;
        internal const uint IORING_SETUP_R_DISABLED = 1U << 6;
        internal const uint IORING_SETUP_COOP_TASKRUN = 1U << 8;
        internal const uint IORING_SETUP_SINGLE_ISSUER = 1U << 12;
        internal const uint IORING_SETUP_DEFER_TASKRUN = 1U << 13;

        internal const uint IORING_FEAT_SINGLE_MMAP = 1U << 0;
        internal const uint IORING_FEAT_NODROP = 1U << 1;

        internal const uint IORING_ENTER_GETEVENTS = 1U << 0;
        internal const uint IORING_ENTER_EXT_ARG = 1U << 3;

        internal const int ETIME = 62;

        /// <summary>struct io_uring_getevents_arg (IORING_ENTER_EXT_ARG).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct io_uring_getevents_arg
        {
            public ulong sigmask;
            public uint sigmask_sz;
            public uint min_wait_usec;
            public ulong ts;
        }

        [LibraryImport(Libc.Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_enter_arg(long number, int fd, uint toSubmit, uint minComplete, uint flags, io_uring_getevents_arg* arg, nuint argsz);

        /// <summary>io_uring_enter with a wait timeout (IORING_ENTER_EXT_ARG); returns SQEs consumed or -errno
        /// (-ETIME when the timeout expired first).</summary>
        internal static int EnterTimeout(int fd, uint toSubmit, uint minComplete, uint flags, long timeoutNs)
        {
            Libc.Timespec ts;
            ts.tv_sec = timeoutNs / 1_000_000_000;
            ts.tv_nsec = timeoutNs % 1_000_000_000;
            io_uring_getevents_arg arg = default;
            arg.ts = (ulong)&ts;
            while (true)
            {
                long r = syscall_enter_arg(SYS_io_uring_enter, fd, toSubmit, minComplete, flags | IORING_ENTER_EXT_ARG,
                    &arg, (nuint)sizeof(io_uring_getevents_arg));
                if (r >= 0)
                {
                    return (int)r;
                }

                int errno = Libc.LastErrno;
                if (errno != Libc.EINTR)
                {
                    return -errno;
                }
            }
        }

        internal const long IORING_OFF_SQ_RING = 0;
        internal const long IORING_OFF_CQ_RING = 0x8000000;
        internal const long IORING_OFF_SQES = 0x10000000;

        internal const byte IORING_OP_NOP = 0;
        internal const byte IORING_OP_READV = 1;
        internal const byte IORING_OP_WRITEV = 2;
        internal const byte IORING_OP_POLL_ADD = 6;
        internal const byte IORING_OP_ASYNC_CANCEL = 14;
        internal const byte IORING_OP_READ = 22;
        internal const byte IORING_OP_WRITE = 23;

        internal const byte IOSQE_FIXED_FILE = 1 << 0;

        internal const uint IORING_ASYNC_CANCEL_ALL = 1U << 0;
        internal const uint IORING_ASYNC_CANCEL_ANY = 1U << 2;

        internal const uint IORING_REGISTER_FILES = 2;
        internal const uint IORING_UNREGISTER_FILES = 3;
        internal const uint IORING_REGISTER_ENABLE_RINGS = 12;

        internal const uint POLLIN = 0x0001;

        internal const int EFD_NONBLOCK = 0x800;
        internal const int EFD_CLOEXEC = 0x80000;

        /// <summary>eventfd(2): the completion thread's wake-up line (polled through the ring).</summary>
        [LibraryImport(Libc.Name, SetLastError = true)]
        internal static partial int eventfd(uint initval, int flags);

        [LibraryImport(Libc.Name, EntryPoint = "write", SetLastError = true)]
        private static partial nint write_u64(int fd, ulong* value, nuint count);

        [LibraryImport(Libc.Name, EntryPoint = "read", SetLastError = true)]
        private static partial nint read_u64(int fd, ulong* value, nuint count);

        /// <summary>Adds 1 to an eventfd counter (retrying EINTR; EAGAIN means the counter is already huge, which
        /// still wakes the reader).</summary>
        internal static void EventFdSignal(int fd)
        {
            ulong one = 1;
            while (write_u64(fd, &one, sizeof(ulong)) < 0 && Libc.LastErrno == Libc.EINTR)
            {
            }
        }

        /// <summary>Resets a non-blocking eventfd counter to zero.</summary>
        internal static void EventFdDrain(int fd)
        {
            ulong value;
            while (read_u64(fd, &value, sizeof(ulong)) < 0 && Libc.LastErrno == Libc.EINTR)
            {
            }
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct io_sqring_offsets
        {
            public uint head;
            public uint tail;
            public uint ring_mask;
            public uint ring_entries;
            public uint flags;
            public uint dropped;
            public uint array;
            public uint resv1;
            public ulong user_addr;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct io_cqring_offsets
        {
            public uint head;
            public uint tail;
            public uint ring_mask;
            public uint ring_entries;
            public uint overflow;
            public uint cqes;
            public uint flags;
            public uint resv1;
            public ulong user_addr;
        }

        /// <summary>struct io_uring_params (120 bytes).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct io_uring_params
        {
            public uint sq_entries;
            public uint cq_entries;
            public uint flags;
            public uint sq_thread_cpu;
            public uint sq_thread_idle;
            public uint features;
            public uint wq_fd;
            public fixed uint resv[3];
            public io_sqring_offsets sq_off;
            public io_cqring_offsets cq_off;
        }

        /// <summary>struct io_uring_sqe (64 bytes); unions are named by the member SharedStore uses.</summary>
        [StructLayout(LayoutKind.Explicit, Size = 64)]
        internal struct io_uring_sqe
        {
            [FieldOffset(0)] public byte opcode;
            [FieldOffset(1)] public byte flags;
            [FieldOffset(2)] public ushort ioprio;
            [FieldOffset(4)] public int fd;
            [FieldOffset(8)] public ulong off;
            [FieldOffset(16)] public ulong addr;
            [FieldOffset(24)] public uint len;
            [FieldOffset(28)] public uint rw_flags;
            [FieldOffset(32)] public ulong user_data;
            [FieldOffset(40)] public ushort buf_index;
            [FieldOffset(42)] public ushort personality;
            [FieldOffset(44)] public int file_index;
            [FieldOffset(48)] public ulong addr3;
            [FieldOffset(56)] public ulong pad2;
        }

        /// <summary>struct io_uring_cqe (16 bytes, no CQE32).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct io_uring_cqe
        {
            public ulong user_data;
            public int res;
            public uint flags;
        }

        [LibraryImport(Libc.Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_setup(long number, uint entries, io_uring_params* p);

        [LibraryImport(Libc.Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_enter(long number, int fd, uint toSubmit, uint minComplete, uint flags, void* sig, nuint sigsz);

        [LibraryImport(Libc.Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_register(long number, int fd, uint opcode, void* arg, uint nrArgs);

        /// <summary>io_uring_setup; returns the ring descriptor or -errno.</summary>
        internal static int Setup(uint entries, io_uring_params* p)
        {
            long r = syscall_setup(SYS_io_uring_setup, entries, p);
            return r >= 0 ? (int)r : -Libc.LastErrno;
        }

        /// <summary>io_uring_enter, retried on EINTR when nothing was consumed. Returns SQEs consumed or -errno.</summary>
        internal static int Enter(int fd, uint toSubmit, uint minComplete, uint flags)
        {
            while (true)
            {
                long r = syscall_enter(SYS_io_uring_enter, fd, toSubmit, minComplete, flags, null, 0);
                if (r >= 0)
                {
                    return (int)r;
                }

                int errno = Libc.LastErrno;
                if (errno != Libc.EINTR)
                {
                    return -errno;
                }
            }
        }

        /// <summary>io_uring_register; returns 0 or -errno.</summary>
        internal static int Register(int fd, uint opcode, void* arg, uint nrArgs)
        {
            while (true)
            {
                long r = syscall_register(SYS_io_uring_register, fd, opcode, arg, nrArgs);
                if (r >= 0)
                {
                    return (int)r;
                }

                int errno = Libc.LastErrno;
                if (errno != Libc.EINTR)
                {
                    return -errno;
                }
            }
        }
    }
}
