using System.Runtime.InteropServices;

namespace SharedStore;

internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        /// <summary>sizeof(pthread_attr_t) on x86-64 glibc is 56; a little room.</summary>
        private const int PthreadAttrBytes = 64;

        [LibraryImport(Name, EntryPoint = "pthread_self")]
        private static partial nuint pthread_self();

        [LibraryImport(Name, EntryPoint = "pthread_getattr_np")]
        private static partial int pthread_getattr_np(nuint thread, void* attr);

        [LibraryImport(Name, EntryPoint = "pthread_attr_getstack")]
        private static partial int pthread_attr_getstack(void* attr, void** stackaddr, nuint* stacksize);

        [LibraryImport(Name, EntryPoint = "pthread_attr_destroy")]
        private static partial int pthread_attr_destroy(void* attr);

        /// <summary>The calling thread's stack, [low, low + size); (0, 0) when glibc cannot tell.</summary>
        internal static (nuint Low, nuint Size) CurrentThreadStack()
        {
            byte* attr = stackalloc byte[PthreadAttrBytes];
            if (pthread_getattr_np(pthread_self(), attr) != 0)
            {
                return (0, 0);
            }

            void* low;
            nuint size;
            int rc = pthread_attr_getstack(attr, &low, &size);
            _ = pthread_attr_destroy(attr);
            return rc == 0 ? ((nuint)low, size) : (0, 0);
        }
    }
}
