using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const long SYS_membarrier = 324; // x86_64
        internal const int MEMBARRIER_CMD_QUERY = 0;
        internal const int MEMBARRIER_CMD_GLOBAL = 1;
        internal const int MEMBARRIER_CMD_GLOBAL_EXPEDITED = 2;
        internal const int MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 4;

        [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true)]
        private static partial long syscall_membarrier(long number, int cmd, uint flags, int cpuId);

        /// <summary>membarrier(cmd): returns the syscall's result, or -errno.</summary>
        internal static long Membarrier(int cmd)
        {
            long r = syscall_membarrier(SYS_membarrier, cmd, 0, 0);
            return r >= 0 ? r : -Marshal.GetLastPInvokeError();
        }
    }
}
