using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const uint MFD_CLOEXEC = 0x0001;
        internal const uint MFD_ALLOW_SEALING = 0x0002;

        internal const int PROT_NONE = 0x0;
        internal const int PROT_READ = 0x1;
        internal const int PROT_WRITE = 0x2;

        internal const int MAP_SHARED = 0x01;
        internal const int MAP_PRIVATE = 0x02;
        internal const int MAP_ANONYMOUS = 0x20;
        internal const int MAP_NORESERVE = 0x4000;
        internal const int MAP_POPULATE = 0x8000;

        internal const int MADV_DONTNEED = 4;
        internal const int MADV_REMOVE = 9;
        internal const int MADV_HUGEPAGE = 14;
        internal const int MADV_POPULATE_READ = 22;
        internal const int MADV_POPULATE_WRITE = 23;

        internal const int FALLOC_FL_KEEP_SIZE = 0x01;
        internal const int FALLOC_FL_PUNCH_HOLE = 0x02;

        internal static readonly nint MAP_FAILED = -1;

        [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int memfd_create(string name, uint flags);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int munmap(nint addr, nuint length);

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int madvise(nint addr, nuint length, int advice);
    }
}
