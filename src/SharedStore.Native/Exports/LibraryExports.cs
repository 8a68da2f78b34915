using System.Runtime.InteropServices;

namespace SharedStore.Native.Exports;

/// <summary>Calls about the library itself.</summary>
internal static unsafe class LibraryExports
{
    /// <summary><c>sharedstore_strerror</c>: a static, never-freed description of any value a call returns.</summary>
    [UnmanagedCallersOnly(EntryPoint = "sharedstore_strerror")]
    public static sbyte* StrError(int value)
    {
        try
        {
            return Errors.Describe(value);
        }
        catch
        {
            return null; // unreachable: the strings are built once, before any call can fail
        }
    }

    /// <summary><c>sharedstore_last_error</c>: the message of this thread's last failed call.</summary>
    [UnmanagedCallersOnly(EntryPoint = "sharedstore_last_error")]
    public static byte* LastError()
    {
        try
        {
            return Errors.LastMessage();
        }
        catch
        {
            return null;
        }
    }
}
