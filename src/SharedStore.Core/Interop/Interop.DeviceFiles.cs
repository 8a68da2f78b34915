namespace SharedStore;

internal static partial class Interop
{
    /// <summary>open(2) flags and errnos of the device library's file modes (x86_64 values, spelled as in
    /// asm-generic/fcntl.h and errno.h).</summary>
    internal static partial class Libc
    {
        /// <summary>Each write returns once its data (and the metadata needed to read it back) is on the device.</summary>
        internal const int O_DSYNC = 0x1000; // 010000

        /// <summary>An unnamed regular file in the directory named by the path; it is freed when its last
        /// descriptor closes (also when the process dies). __O_TMPFILE | O_DIRECTORY (Interop.Dir.cs), as glibc
        /// defines it.</summary>
        internal const int O_TMPFILE = 0x400000 | O_DIRECTORY; // 020200000

        internal const int EISDIR = 21;
        internal const int EOPNOTSUPP = 95;
    }
}
