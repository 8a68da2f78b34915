using System.Runtime.InteropServices;

namespace SharedStore.Bench.PosixInterop;

/// <summary>
/// libc's process-shared rwlock, the baseline of the read-lock scenarios (<c>pthread-rwlock-rd</c>,
/// <c>pthread-rwlock-rd-2proc</c>). The calls are blittable (pointers only) and marked
/// <see cref="SuppressGCTransitionAttribute"/>: the baseline pays the cheapest managed-to-native call there is (a few
/// instructions), not a GC transition the lock itself does not need. That is only sound because the baselines take
/// read locks alone: no writer ever holds the lock, so rdlock never sleeps in the kernel.
/// </summary>
internal static unsafe partial class Pthread
{
    private const string Libc = "libc";

    /// <summary>PTHREAD_PROCESS_SHARED (glibc).</summary>
    public const int PTHREAD_PROCESS_SHARED = 1;

    /// <summary>sizeof(pthread_rwlock_t) on x86-64 glibc.</summary>
    public const int RwlockBytes = 56;

    [LibraryImport(Libc, EntryPoint = "pthread_rwlockattr_init")]
    private static partial int pthread_rwlockattr_init(long* attr);

    [LibraryImport(Libc, EntryPoint = "pthread_rwlockattr_setpshared")]
    private static partial int pthread_rwlockattr_setpshared(long* attr, int pshared);

    [LibraryImport(Libc, EntryPoint = "pthread_rwlock_init")]
    private static partial int pthread_rwlock_init(void* rwlock, long* attr);

    [LibraryImport(Libc, EntryPoint = "pthread_rwlock_rdlock")]
    [SuppressGCTransition]
    public static partial int pthread_rwlock_rdlock(void* rwlock);

    [LibraryImport(Libc, EntryPoint = "pthread_rwlock_unlock")]
    [SuppressGCTransition]
    public static partial int pthread_rwlock_unlock(void* rwlock);

    /// <summary>Initializes a PTHREAD_PROCESS_SHARED rwlock at <paramref name="at"/> (in a shared mapping, 8-byte aligned,
    /// <see cref="RwlockBytes"/> long). Only one process initializes; the others use it.</summary>
    public static void InitShared(void* at)
    {
        long attr = 0; // pthread_rwlockattr_t is 8 bytes on x86-64 glibc
        Check(pthread_rwlockattr_init(&attr), "pthread_rwlockattr_init");
        Check(pthread_rwlockattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), "pthread_rwlockattr_setpshared");
        Check(pthread_rwlock_init(at, &attr), "pthread_rwlock_init");
    }

    private static void Check(int rc, string call)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"{call} returned {rc}");
        }
    }
}
