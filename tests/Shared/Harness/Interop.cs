using System.Runtime.InteropServices;

namespace SharedStore.Tests.Harness;

internal static partial class Interop
{
    [LibraryImport("libc", EntryPoint = "getuid")]
    public static partial uint GetUid();
}
