using System.Runtime.InteropServices;

namespace SharedStore;

/// <summary>
/// Every P/Invoke of SharedStore lives under <c>Interop/</c>, one nested class per native library and about one
/// file per import family (dotnet/runtime interop guidelines). Constants are spelled as in the C headers.
/// </summary>
internal static partial class Interop
{
    internal static unsafe partial class Libc
    {
        internal const string Name = "libc";

        internal const int EINTR = 4;
        internal const int EAGAIN = 11;
        internal const int ENOMEM = 12;
        internal const int EACCES = 13;
        internal const int EEXIST = 17;
        internal const int EINVAL = 22;
        internal const int ENOSPC = 28;
        internal const int EPIPE = 32;
        internal const int ETIMEDOUT = 110;
        internal const int ECONNREFUSED = 111;
        internal const int ENOENT = 2;
        internal const int EWOULDBLOCK = EAGAIN;
        internal const int EFBIG = 27;
        internal const int EBADF = 9;
        internal const int ECONNRESET = 104;
        internal const int EMFILE = 24;
        internal const int ERANGE = 34;
        internal const int ECONNABORTED = 103;
        internal const int ENFILE = 23;
        internal const int EROFS = 30;
        internal const int EDQUOT = 122;

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int close(int fd);

        [LibraryImport(Name)]
        internal static partial int getpid();

        [LibraryImport(Name)]
        internal static partial uint getuid();

        [LibraryImport(Name)]
        internal static partial uint getgid();

        [LibraryImport(Name, SetLastError = true)]
        internal static partial int getgroups(int size, uint* list);

        [LibraryImport(Name, EntryPoint = "strerror")]
        private static partial nint strerror_raw(int errnum);

        internal static string StrError(int errno) => Marshal.PtrToStringUTF8(strerror_raw(errno)) ?? $"errno {errno}";

        /// <summary>errno of the last P/Invoke made with SetLastError = true on this thread.</summary>
        internal static int LastErrno => Marshal.GetLastPInvokeError();

        /// <summary>An exception naming the failed call and keeping its errno, for syscalls that must not fail. Its code
        /// is <see cref="ErrorCodeOf"/>(errno).</summary>
        internal static SharedStoreException Error(string call, int errno) =>
            new(ErrorCodeOf(errno), $"{call} failed: {StrError(errno)} (errno {errno})", errno);

        /// <summary>The one errno-to-<see cref="ErrorCode"/> table: errors the codes name get their code, every other
        /// errno (EIO, EBADF, ...) is <see cref="ErrorCode.IoError"/>.</summary>
        internal static ErrorCode ErrorCodeOf(int errno) => errno switch
        {
            ENOENT or ENOTDIR => ErrorCode.NotFound,
            EEXIST => ErrorCode.AlreadyExists,
            EACCES or EPERM or EROFS => ErrorCode.PermissionDenied,
            ENOMEM or ENOSPC or EDQUOT or EMFILE or ENFILE or EFBIG or ENOBUFS => ErrorCode.NoResources,
            ETIMEDOUT or IoUring.ETIME => ErrorCode.Timeout,
            EINVAL or EMSGSIZE or ERANGE => ErrorCode.InvalidArgument,
            ECONNREFUSED or ECONNRESET or ECONNABORTED or EPIPE or ENOTCONN => ErrorCode.BrokerUnavailable,
            ECANCELED => ErrorCode.Canceled,
            EAGAIN or EBUSY => ErrorCode.Busy,
            _ => ErrorCode.IoError,
        };
    }
}
