using System.Globalization;

namespace SharedStore.TestClient;

/// <summary>
/// File-system moves a hostile client makes with its own permissions (the durable-path tests run this client as the
/// user nobody): swap its own durable folder for a symlink, once or continuously, to see whether the broker follows.
/// <list type="bullet">
/// <item><c>fs-rename FROM TO</c> → <c>ok</c> (rename(2): a folder, a file or a symlink)</item>
/// <item><c>fs-symlink TARGET LINK</c> → <c>ok</c></item>
/// <item><c>fs-exchange A B</c> → <c>ok</c>: renameat2(RENAME_EXCHANGE), the two names swapped in one step</item>
/// <item><c>fs-swap-loop A B</c> → <c>ok</c> at once; a thread then exchanges A and B as fast as it can until
/// <c>fs-swap-stop</c> → <c>ok SWAPS</c>, the number of exchanges made (an even count leaves the names as they were)</item>
/// </list>
/// </summary>
internal sealed class FileCommands
{
    private Thread? _swapper;
    private volatile bool _stopSwapping;
    private long _swaps;
    private string? _swapError;

    /// <summary>Runs a file-system command; null when <paramref name="a"/> is not one.</summary>
    public string? Execute(string[] a)
    {
        switch (a[0])
        {
            case "fs-rename":
                Check(Interop.Libc.renameat2(Interop.Libc.AT_FDCWD, a[1], Interop.Libc.AT_FDCWD, a[2], 0), "rename");
                return "ok";

            case "fs-symlink":
                File.CreateSymbolicLink(a[2], a[1]);
                return "ok";

            case "fs-exchange":
                Check(Interop.Libc.renameat2(Interop.Libc.AT_FDCWD, a[1], Interop.Libc.AT_FDCWD, a[2], Interop.Libc.RENAME_EXCHANGE), "renameat2(RENAME_EXCHANGE)");
                return "ok";

            case "fs-swap-loop":
            {
                if (_swapper is not null)
                {
                    throw new InvalidOperationException("a swap loop runs already");
                }

                string x = a[1], y = a[2];
                _stopSwapping = false;
                _swapper = new Thread(() =>
                {
                    while (!_stopSwapping)
                    {
                        if (Interop.Libc.renameat2(Interop.Libc.AT_FDCWD, x, Interop.Libc.AT_FDCWD, y, Interop.Libc.RENAME_EXCHANGE) != 0)
                        {
                            _swapError = Interop.Libc.StrError(Interop.Libc.LastErrno);
                            return;
                        }

                        _swaps++;
                    }
                }) { IsBackground = true, Name = "fs-swap-loop" };
                _swapper.Start();
                return "ok";
            }

            case "fs-swap-stop":
            {
                var t = _swapper ?? throw new InvalidOperationException("no swap loop runs");
                _stopSwapping = true;
                t.Join();
                _swapper = null;
                return _swapError is { } e ? $"err SwapFailed {e} after {_swaps} swaps" : string.Create(CultureInfo.InvariantCulture, $"ok {_swaps}");
            }

            default:
                return null;
        }
    }

    private static void Check(int r, string call)
    {
        if (r != 0)
        {
            int errno = Interop.Libc.LastErrno;
            throw new IOException($"{call}: {Interop.Libc.StrError(errno)}");
        }
    }
}
