using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace SharedStore.Native;

/// <summary>
/// How failures cross the boundary. Every export catches every exception and returns <c>-(int)ErrorCode</c>
/// (<see cref="From"/>); nothing managed ever unwinds into C (an exception escaping an
/// <c>[UnmanagedCallersOnly]</c> method would end the process). The exception's message is kept per thread for
/// <c>sharedstore_last_error()</c>. Mapping of the .NET exceptions that mean misuse in C#:
/// ArgumentException (range outside the object, size too large, bad name) → InvalidArgument;
/// ObjectDisposedException (a handle closed underneath, e.g. by a destroy through another id) → NotFound;
/// InvalidOperationException (this process still holds leases; a status entry reused a ring lap later) → Busy or
/// NotFound as the call documents; OperationCanceledException → Canceled; OutOfMemoryException → NoResources;
/// anything else → Internal.
/// </summary>
internal static unsafe class Errors
{
    private const int MessageBytes = 512;

    [ThreadStatic]
    private static byte[]? t_message;

    private static readonly nint[] s_strings = BuildStrings();

    public static int Fail(ErrorCode code, string message)
    {
        Remember(message);
        return -(int)code;
    }

    /// <summary>The C return value for <paramref name="e"/>, remembering its message for this thread.</summary>
    public static int From(Exception e, ErrorCode invalidOperation = ErrorCode.Busy)
    {
        ErrorCode code = e switch
        {
            SharedStoreException s => s.Code,
            ObjectDisposedException => ErrorCode.NotFound,
            ArgumentException => ErrorCode.InvalidArgument,
            InvalidOperationException => invalidOperation,
            OperationCanceledException => ErrorCode.Canceled,
            OutOfMemoryException => ErrorCode.NoResources,
            _ => ErrorCode.Internal,
        };
        Remember(e is SharedStoreException ? e.Message : $"{e.GetType().Name}: {e.Message}");
        return -(int)code;
    }

    /// <summary>This thread's last failure message (NUL-terminated UTF-8, in a pinned per-thread buffer).</summary>
    public static byte* LastMessage()
    {
        var buf = t_message ??= GC.AllocateArray<byte>(MessageBytes, pinned: true);
        return (byte*)Unsafe.AsPointer(ref buf[0]);
    }

    /// <summary>A static description of a return value (never freed; the same pointer every time).</summary>
    public static sbyte* Describe(int value)
    {
        int i = value switch
        {
            0 => 0,
            1 => 14, // INPROGRESS
            2 => 15, // CANCELED
            < 0 and >= -13 => -value,
            _ => 16,
        };
        return (sbyte*)s_strings[i];
    }

    private static void Remember(string message)
    {
        var buf = t_message ??= GC.AllocateArray<byte>(MessageBytes, pinned: true);
        int n = Encoding.UTF8.GetBytes(message.AsSpan(0, Math.Min(message.Length, (MessageBytes / 4) - 1)), buf);
        buf[n] = 0;
    }

    private static nint[] BuildStrings()
    {
        string[] text =
        [
            "success",
            "not found: no such container, object or operation id, or it was left or destroyed",
            "already exists",
            "permission denied",
            "no resources: memory limit, full disk, or a full table",
            "timed out",
            "being destroyed",
            "invalid argument",
            "broker unavailable: not running, or it died",
            "broker speaks another protocol version",
            "canceled",
            "would deadlock: this process holds a lease on that range",
            "internal error in the broker or library",
            "busy: still in use by this process (leases, asynchronous reads, calls in progress), or still in progress",
            "in progress",
            "canceled",
            "unknown error",
        ];
        var ptrs = new nint[text.Length];
        for (int i = 0; i < text.Length; i++)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(text[i]);
            byte* p = (byte*)NativeMemory.Alloc((nuint)utf8.Length + 1);
            utf8.CopyTo(new Span<byte>(p, utf8.Length));
            p[utf8.Length] = 0;
            ptrs[i] = (nint)p;
        }

        return ptrs;
    }
}
