using System.Runtime.InteropServices;

namespace SharedStore.Native;

internal static partial class Interop
{
    internal static partial class Libc
    {
        /// <summary>glibc's <c>Dl_info</c>.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct DlInfo
        {
            public nint dli_fname;
            public nint dli_fbase;
            public nint dli_sname;
            public nint dli_saddr;
        }

        /// <summary>Which loaded file holds <paramref name="addr"/> (libc.so.6 has it since glibc 2.34).</summary>
        [LibraryImport("libc", EntryPoint = "dladdr")]
        internal static unsafe partial int dladdr(void* addr, DlInfo* info);
    }
}
