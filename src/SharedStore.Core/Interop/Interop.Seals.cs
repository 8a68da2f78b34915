using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    /// <summary>What the broker uses to make its memfds safe to hand out (docs/ARCHITECTURE.md §2): file seals
    /// (linux/fcntl.h), owner-only inode modes, and mprotect (which the tests use to check that a read-only mapping
    /// cannot be made writable).</summary>
    internal static unsafe partial class Libc
    {
        internal const int F_DUPFD_CLOEXEC = 1030;
        internal const int F_ADD_SEALS = 1033;
        internal const int F_GET_SEALS = 1034;

        internal const int F_SEAL_SEAL = 0x0001;
        internal const int F_SEAL_SHRINK = 0x0002;
        internal const int F_SEAL_GROW = 0x0004;
        internal const int F_SEAL_WRITE = 0x0008;
        internal const int F_SEAL_FUTURE_WRITE = 0x0010;

        internal const int S_IRUSR = 0x100; // 0400
        internal const int S_IWUSR = 0x80;  // 0200

        internal const int EFAULT = 14;
        internal const int EBUSY = 16;

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int mprotect(nint addr, nuint length, int prot);
    }
}
