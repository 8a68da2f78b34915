using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        // Shared (not FUTEX_PRIVATE_FLAG) operations: the words live in memfd mappings that several processes map
        // at different addresses; the kernel keys shared futexes on (inode, offset), so they meet.
        internal const int FUTEX_WAIT = 0;
        internal const int FUTEX_WAKE = 1;
        internal const long SYS_futex = 202; // x86_64

        [StructLayout(LayoutKind.Sequential)]
        internal struct Timespec
        {
            public long tv_sec;
            public long tv_nsec;
        }

        [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_futex(long number, int* uaddr, int op, int val, Timespec* timeout, int* uaddr2, int val3);

        /// <summary>FUTEX_WAIT on a shared word: sleeps while *addr == expected, up to <paramref name="timeoutNs"/>.
        /// Returns 0 when woken, or the errno (EAGAIN: the word changed first, ETIMEDOUT, EINTR).</summary>
        internal static int FutexWait(int* addr, int expected, long timeoutNs)
        {
            Timespec ts;
            ts.tv_sec = timeoutNs / 1_000_000_000;
            ts.tv_nsec = timeoutNs % 1_000_000_000;
            long r = syscall_futex(SYS_futex, addr, FUTEX_WAIT, expected, &ts, null, 0);
            return r == 0 ? 0 : Marshal.GetLastPInvokeError();
        }

        /// <summary>FUTEX_WAKE on a shared word; returns how many sleepers were woken.</summary>
        internal static int FutexWake(int* addr, int count)
        {
            long r = syscall_futex(SYS_futex, addr, FUTEX_WAKE, count, null, null, 0);
            return r < 0 ? 0 : (int)r;
        }
    }
}
