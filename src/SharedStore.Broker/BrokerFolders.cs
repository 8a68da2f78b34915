using System.Globalization;

namespace SharedStore.Broker;

/// <summary>
/// The folders a broker writes into — the socket's (socket, <c>.pid</c>, <c>.lock</c>), the log file's and the state
/// folder — made ready before the broker opens any file, so that a broker starts from nothing (issue 12: a new user's
/// first start used to die opening its log in a folder nobody had made yet).
/// <para><b>Rules</b> (docs/ARCHITECTURE.md §1, "Folders"). A missing folder is created, with its missing parents, mode
/// 0700 (0755 for a <c>--system</c> broker, whose socket every user must reach). A folder the broker names itself — the
/// default socket folder (<c>$XDG_RUNTIME_DIR/sharedstore</c>, <c>/tmp/sharedstore-UID</c>, <c>/run/sharedstore</c>) and
/// the default state folder beside the socket — must be a real folder owned by the broker's user; its mode is set to
/// exactly that mode if it is not (a pre-made <c>/tmp/sharedstore-UID</c> of another user is refused: whoever owns the
/// folder can replace the socket). A folder given explicitly (<c>--socket</c>, <c>--log</c>, <c>--state-dir</c>) that
/// exists already is the operator's: it is left as it is, but refused when another user could replace the broker's
/// files in it (writable by group or others without the sticky bit, or owned by another user who is not root).</para>
/// <para>Checks and changes go through a descriptor opened with <c>O_DIRECTORY|O_NOFOLLOW</c>, so a symlink swapped in
/// between the check and the change is refused rather than followed.</para>
/// </summary>
internal static class BrokerFolders
{
    public const int UserMode = 0x1C0;   // 0700
    public const int SystemMode = 0x1ED; // 0755

    /// <summary>Creates or checks every folder the broker will write into. Throws <see cref="BrokerFolderException"/>
    /// with the reason when one cannot be used.</summary>
    public static void Prepare(BrokerOptions options)
    {
        int mode = options.SystemWide ? SystemMode : UserMode;
        string socketDir = Path.GetDirectoryName(Path.GetFullPath(options.SocketPath))!;
        Ensure(socketDir, mode, owned: IsDefaultSocketFolder(socketDir), "socket");
        if (options.LogPath is { } log)
        {
            Ensure(Path.GetDirectoryName(Path.GetFullPath(log))!, mode, owned: false, "log");
        }

        Ensure(StateDirectory(options), mode, owned: options.StateDirectory is null, "state");
    }

    /// <summary>Whether <paramref name="dir"/> is one of the socket folders SharedStore names itself (however the
    /// socket path reached the broker: a client that starts a broker passes the default path with --socket).</summary>
    public static bool IsDefaultSocketFolder(string dir)
    {
        string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        return dir == Path.GetDirectoryName(BrokerEndpoint.SystemSocketPath)
            || dir == Path.Combine("/tmp", string.Create(CultureInfo.InvariantCulture, $"sharedstore-{Interop.Libc.getuid()}"))
            || (!string.IsNullOrEmpty(runtime) && dir == Path.Combine(Path.GetFullPath(runtime), "sharedstore"));
    }

    /// <summary>Where the broker keeps its state: <c>--state-dir</c>, else <c>state/</c> beside the socket.</summary>
    public static string StateDirectory(BrokerOptions options) =>
        Path.GetFullPath(options.StateDirectory ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(options.SocketPath))!, "state"));

    /// <summary>Makes <paramref name="dir"/> usable: see the class comment. <paramref name="owned"/>: the broker named
    /// the folder itself, so it must own it and sets its mode.</summary>
    internal static unsafe void Ensure(string dir, int mode, bool owned, string role)
    {
        bool created = CreateMissing(dir, mode, role);
        int fd = Interop.Libc.open(dir, Interop.Libc.O_RDONLY | Interop.Libc.O_DIRECTORY | Interop.Libc.O_NOFOLLOW | Interop.Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = Interop.Libc.LastErrno;
            throw new BrokerFolderException(errno is Interop.Libc.ELOOP or Interop.Libc.ENOTDIR
                ? $"the {role} folder {dir} is a symbolic link or not a folder; the broker uses only a real folder there"
                : $"cannot open the {role} folder {dir}: {Interop.Libc.StrError(errno)}");
        }

        using var handle = new SafeFd(fd);
        Interop.Libc.Statx st;
        if (Interop.Libc.FStatx(fd, Interop.Libc.STATX_MODE | Interop.Libc.STATX_UID, &st) != 0)
        {
            throw new BrokerFolderException($"cannot inspect the {role} folder {dir}: {Interop.Libc.StrError(Interop.Libc.LastErrno)}");
        }

        uint me = Interop.Libc.geteuid();
        int current = st.stx_mode & 0xFFF;
        if (created || owned)
        {
            if (st.stx_uid != me)
            {
                throw new BrokerFolderException(string.Create(CultureInfo.InvariantCulture,
                    $"the {role} folder {dir} belongs to uid {st.stx_uid}, not to this broker's uid {me}: whoever owns it could replace the broker's socket and files; remove it, or choose another folder"));
            }

            if (current != mode && Interop.Libc.fchmod(fd, mode) != 0)
            {
                throw new BrokerFolderException(string.Create(CultureInfo.InvariantCulture,
                    $"the {role} folder {dir} has mode {Octal(current)} and cannot be set to {Octal(mode)}: {Interop.Libc.StrError(Interop.Libc.LastErrno)}"));
            }

            return;
        }

        bool othersMayWrite = (st.stx_mode & (Interop.Libc.S_IWGRP | Interop.Libc.S_IWOTH)) != 0;
        if (othersMayWrite && (st.stx_mode & Interop.Libc.S_ISVTX) == 0)
        {
            throw new BrokerFolderException(string.Create(CultureInfo.InvariantCulture,
                $"the {role} folder {dir} has mode {Octal(current)}: other users may write there without the sticky bit and could replace the broker's files; use a folder only its owner may write"));
        }

        if (st.stx_uid != me && st.stx_uid != 0)
        {
            throw new BrokerFolderException(string.Create(CultureInfo.InvariantCulture,
                $"the {role} folder {dir} belongs to uid {st.stx_uid}, neither this broker's uid {me} nor root; use a folder of your own"));
        }
    }

    /// <summary>mkdir of every missing folder on the path, each with <paramref name="mode"/> (umask lowers it; the leaf
    /// is set exactly afterwards). True when the leaf was created now.</summary>
    private static bool CreateMissing(string dir, int mode, string role)
    {
        var missing = new Stack<string>();
        for (string? d = dir; d is not null && !Directory.Exists(d) && !File.Exists(d) && !IsLink(d); d = Path.GetDirectoryName(d))
        {
            missing.Push(d);
        }

        bool leaf = false;
        while (missing.TryPop(out string? d))
        {
            if (Interop.Libc.mkdir(d, mode) != 0)
            {
                int errno = Interop.Libc.LastErrno;
                if (errno != Interop.Libc.EEXIST)
                {
                    throw new BrokerFolderException($"cannot create the {role} folder {d}: {Interop.Libc.StrError(errno)}");
                }
            }
            else if (d == dir)
            {
                leaf = true;
            }
        }

        return leaf;
    }

    private static bool IsLink(string path) => new FileInfo(path).LinkTarget is not null;

    private static string Octal(int mode) => "0" + Convert.ToString(mode, 8);
}

/// <summary>A folder the broker needs cannot be made or used safely; the message says which and why.</summary>
internal sealed class BrokerFolderException(string message) : Exception(message);
