using System.Globalization;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// A folder the broker keeps files in — a durable container's folder, or its own state folder — held by one descriptor
/// from the moment it is opened until the broker is done with it. Every file in it is made, opened, renamed and
/// deleted relative to that descriptor (docs/ARCHITECTURE.md §2 "Durable paths" and §11), never by path.
/// <para><b>Why.</b> A root broker writes into folders its clients name. Checked by path and used by path later, the
/// folder could be swapped for a symlink between the check and the use, and the broker would create root-owned files
/// wherever the symlink pointed (issue 13, finding 2). Here the path is resolved exactly once, by
/// <c>open(O_DIRECTORY|O_NOFOLLOW)</c>: a symlink in the last component is refused; a parent swapped before the open
/// only changes which folder is opened, and that folder is the one checked (owner and mode read from the descriptor,
/// <see cref="MayWrite"/>), so the broker writes only into a folder its caller may write itself; anything renamed or
/// swapped after the open changes nothing, because the descriptor names the folder itself, not a path to it.</para>
/// <para>Inside the folder the broker only uses plain names (no '/'), each with <c>O_NOFOLLOW</c>: new files are
/// created <c>O_CREAT|O_EXCL</c> (an existing name, symlink or not, is never opened as new); files read back are
/// accepted only when they are regular files with one link, owned by the broker's uid — files the broker made, not
/// ones the folder's owner put in their place (a symlink, a hard link, or a crafted copy of the metadata).</para>
/// </summary>
internal sealed unsafe class DurableFolder : IDisposable
{
    private const int NewFileMode = 0x1B6; // 0666, narrowed by the umask (as before: the folder's mode guards access)
    private const int Search = 1, Write = 2;
    private readonly SafeFd _fd;

    private DurableFolder(string path, SafeFd fd, in Interop.Libc.Statx st)
    {
        Path = path;
        _fd = fd;
        Owner = st.stx_uid;
        Group = st.stx_gid;
        Mode = st.stx_mode & 0xFFF;
        Identity = IdentityOf(st);
    }

    /// <summary>The path the folder was opened by: for messages and the restore registry, never to reach a file.</summary>
    public string Path { get; }

    public uint Owner { get; }

    public uint Group { get; }

    /// <summary>Permission bits (07777) when it was opened.</summary>
    public int Mode { get; }

    /// <summary>Device and inode: two paths that reach one folder give one identity.</summary>
    public (ulong Device, ulong Inode) Identity { get; }

    /// <summary>Opens <paramref name="path"/> with O_DIRECTORY|O_NOFOLLOW (the only time the path is resolved).
    /// Throws <see cref="DurableFolderException"/>: ELOOP when it is a symlink, ENOTDIR when it is not a folder, the
    /// open's errno otherwise.</summary>
    public static DurableFolder Open(string path)
    {
        int fd = Interop.Libc.OpenAt(Interop.Libc.AT_FDCWD, path, Interop.Libc.O_RDONLY | Interop.Libc.O_DIRECTORY | Interop.Libc.O_NOFOLLOW | Interop.Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = -fd;

            // With O_DIRECTORY the kernel answers ENOTDIR for a symlink before O_NOFOLLOW's ELOOP. Look (without
            // following) only to say which: the open has failed either way.
            if (errno == Interop.Libc.ENOTDIR && IsSymlink(Interop.Libc.AT_FDCWD, path))
            {
                errno = Interop.Libc.ELOOP;
            }

            throw new DurableFolderException(errno switch
            {
                Interop.Libc.ELOOP => $"'{path}' is a symbolic link: not followed (name the folder itself)",
                Interop.Libc.ENOTDIR => $"'{path}' is not a directory",
                _ => $"'{path}': {Interop.Libc.StrError(errno)}",
            }, errno);
        }

        var handle = new SafeFd(fd);
        try
        {
            var st = Stat(handle.Fd, "", Interop.Libc.AT_EMPTY_PATH, path);
            return new DurableFolder(path, handle, st);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Whether <paramref name="who"/> may create files in the folder by its owner, group and mode as they
    /// were when it was opened (root always may). One permission class applies, as in the kernel: the owner's bits
    /// for the owner, the group's for a member of the folder's group, the others' for everyone else; creating a file
    /// needs both write and search. ACLs are not consulted.</summary>
    public bool MayWrite(PeerCredentials who)
    {
        if (who.IsRoot)
        {
            return true;
        }

        int bits = who.Uid == Owner ? Mode >> 6 : who.InGroup(Group) ? Mode >> 3 : Mode;
        return (bits & (Write | Search)) == (Write | Search);
    }

    /// <summary>Describes owner and mode for messages.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture, $"owner uid {Owner}, group {Group}, mode 0{Convert.ToString(Mode, 8)}");

    /// <summary>Whether a file of that name is in the folder (a symlink counts; it is not followed).</summary>
    public bool Exists(string name)
    {
        CheckName(name);
        using var dir = Hold();
        Interop.Libc.Statx st;
        return Interop.Libc.statx(dir.Fd, name, Interop.Libc.AT_SYMLINK_NOFOLLOW, Interop.Libc.STATX_TYPE, &st) == 0;
    }

    /// <summary>Creates a new file, read-write: O_CREAT|O_EXCL|O_NOFOLLOW relative to the folder. An existing name
    /// (a file, a symlink, anything) fails with EEXIST.</summary>
    public SafeFd CreateFile(string name)
    {
        CheckName(name);
        using var dir = Hold();
        int fd = Interop.Libc.OpenAt(dir.Fd, name, Interop.Libc.O_RDWR | Interop.Libc.O_CREAT | Interop.Libc.O_EXCL | Interop.Libc.O_NOFOLLOW | Interop.Libc.O_CLOEXEC, NewFileMode);
        if (fd < 0)
        {
            throw new DurableFolderException($"cannot create '{name}' in '{Path}': {Interop.Libc.StrError(-fd)}", -fd);
        }

        return new SafeFd(fd);
    }

    /// <summary>Opens a file the broker made: O_NOFOLLOW relative to the folder, then accepted only as a regular file
    /// with one link owned by the broker's uid. Opened O_NONBLOCK (a FIFO put in its place must not hang the broker),
    /// which is cleared before the descriptor is returned (io_uring would answer EAGAIN instead of waiting for the
    /// disk).</summary>
    public SafeFd OpenFile(string name, bool writable, bool direct = false)
    {
        CheckName(name);
        int flags = (writable ? Interop.Libc.O_RDWR : Interop.Libc.O_RDONLY) | Interop.Libc.O_NOFOLLOW | Interop.Libc.O_NONBLOCK | Interop.Libc.O_CLOEXEC
            | (direct ? Interop.Libc.O_DIRECT : 0);
        int fd;
        using (var dir = Hold())
        {
            fd = Interop.Libc.OpenAt(dir.Fd, name, flags, 0);
        }

        if (fd < 0)
        {
            int errno = -fd;
            throw new DurableFolderException(errno == Interop.Libc.ELOOP
                ? $"'{name}' in '{Path}' is a symbolic link: not followed"
                : $"cannot open '{name}' in '{Path}': {Interop.Libc.StrError(errno)}", errno);
        }

        var handle = new SafeFd(fd);
        try
        {
            var st = Stat(fd, "", Interop.Libc.AT_EMPTY_PATH, name);
            uint me = Interop.Libc.geteuid();
            string? wrong = (st.stx_mode & Interop.Libc.S_IFMT) != Interop.Libc.S_IFREG ? "not a regular file"
                : st.stx_nlink != 1 ? string.Create(CultureInfo.InvariantCulture, $"a file with {st.stx_nlink} links (a hard link the broker did not make)")
                : st.stx_uid != me ? string.Create(CultureInfo.InvariantCulture, $"owned by uid {st.stx_uid}, not by the broker's uid {me}: not a file the broker made")
                : null;
            if (wrong is not null)
            {
                throw new DurableFolderException($"'{name}' in '{Path}' is {wrong}; not used", Interop.Libc.EINVAL);
            }

            int fl = Interop.Libc.fcntl(fd, Interop.Libc.F_GETFL, 0);
            if (fl < 0 || Interop.Libc.fcntl(fd, Interop.Libc.F_SETFL, fl & ~Interop.Libc.O_NONBLOCK) < 0)
            {
                throw new DurableFolderException($"fcntl of '{name}' in '{Path}': {Interop.Libc.StrError(Interop.Libc.LastErrno)}", Interop.Libc.LastErrno);
            }

            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads a whole file the broker made (<see cref="OpenFile"/>'s rules).</summary>
    public byte[] ReadFile(string name)
    {
        using var fd = OpenFile(name, writable: false);
        var bytes = new List<byte>();
        byte[] chunk = new byte[1 << 16]; // 65536
        long at = 0;
        fixed (byte* p = chunk)
        {
            while (true)
            {
                long r = Interop.Libc.PRead(fd.Fd, p, (nuint)chunk.Length, at);
                if (r < 0)
                {
                    throw new DurableFolderException($"cannot read '{name}' in '{Path}': {Interop.Libc.StrError((int)-r)}", (int)-r);
                }

                if (r == 0)
                {
                    return [.. bytes];
                }

                bytes.AddRange(chunk.AsSpan(0, (int)r));
                at += r;
            }
        }
    }

    /// <summary>
    /// Replaces <paramref name="name"/> atomically: a temporary file is created new (O_EXCL|O_NOFOLLOW), written,
    /// fsynced, renamed over <paramref name="name"/> inside the folder (renameat2; with <paramref name="noReplace"/> an
    /// existing <paramref name="name"/> fails with EEXIST instead), and the folder is fsynced. On failure the temporary
    /// file is removed and the old file is intact. The temporary is <c>NAME.tmp</c>; a leftover of that name that the
    /// broker made (a crash before the rename) is unlinked first; anything else there (a symlink, another user's
    /// file) is left alone and a random name is used instead: the broker never opens nor removes what it did not make.
    /// </summary>
    public void ReplaceFile(string name, ReadOnlySpan<byte> bytes, bool noReplace = false)
    {
        string tmp = name + ".tmp";
        if (IsOwnLeftover(tmp))
        {
            Delete(tmp); // swapped meanwhile for someone else's file: only by a user who may delete it anyway
        }

        SafeFd? fd = null;
        for (int attempt = 0; fd is null; attempt++)
        {
            try
            {
                fd = CreateFile(tmp);
            }
            catch (DurableFolderException e) when (e.Errno == Interop.Libc.EEXIST && attempt < 8)
            {
                tmp = string.Create(CultureInfo.InvariantCulture, $"{name}.{Random.Shared.NextInt64():x16}.tmp");
            }
        }

        try
        {
            using (fd)
            {
                fixed (byte* p = bytes)
                {
                    for (long at = 0; at < bytes.Length;)
                    {
                        long w = Interop.Libc.PWrite(fd.Fd, p + at, (nuint)(bytes.Length - at), at);
                        if (w <= 0)
                        {
                            int errno = w < 0 ? (int)-w : Interop.Libc.EIO;
                            throw new DurableFolderException($"cannot write '{tmp}' in '{Path}': {Interop.Libc.StrError(errno)}", errno);
                        }

                        at += w;
                    }
                }

                if (Interop.Libc.fsync(fd.Fd) != 0)
                {
                    int errno = Interop.Libc.LastErrno;
                    throw new DurableFolderException($"cannot fsync '{tmp}' in '{Path}': {Interop.Libc.StrError(errno)}", errno);
                }
            }

            using var dir = Hold();
            if (Interop.Libc.renameat2(dir.Fd, tmp, dir.Fd, name, noReplace ? Interop.Libc.RENAME_NOREPLACE : 0) != 0)
            {
                int errno = Interop.Libc.LastErrno;
                throw new DurableFolderException($"cannot rename '{tmp}' to '{name}' in '{Path}': {Interop.Libc.StrError(errno)}", errno);
            }
        }
        catch
        {
            Delete(tmp); // a full disk must not leave a half-written temporary behind (the old file is intact)
            throw;
        }

        Sync();
    }

    /// <summary>unlinkat: removes the name (a symlink itself, never its target). False when it was not there; other
    /// failures are swallowed too (a file the broker cannot delete stays behind: destroy must still finish).</summary>
    public bool Delete(string name)
    {
        CheckName(name);
        using var dir = Hold();
        return Interop.Libc.unlinkat(dir.Fd, name, 0) == 0;
    }

    /// <summary>fsync of the folder: its entries (a rename, a new file) are durable.</summary>
    public void Sync()
    {
        using var dir = Hold();
        _ = Interop.Libc.fsync(dir.Fd);
    }

    public void Dispose() => _fd.Dispose();

    /// <summary>The folder's descriptor for one call: a closed folder throws ObjectDisposedException here rather than
    /// let a call use a descriptor number the kernel may have given to another file.</summary>
    private Held Hold()
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        return new Held(_fd);
    }

    private readonly ref struct Held(SafeFd fd)
    {
        public int Fd => fd.Fd;

        public void Dispose() => fd.DangerousRelease();
    }

    /// <summary>The device and inode of an open descriptor.</summary>
    public static (ulong Device, ulong Inode) IdentityOf(SafeFd fd) => IdentityOf(Stat(fd.Fd, "", Interop.Libc.AT_EMPTY_PATH, "a durable file"));

    private static (ulong Device, ulong Inode) IdentityOf(in Interop.Libc.Statx st) => ((((ulong)st.stx_dev_major) << 32) | st.stx_dev_minor, st.stx_ino);

    private static Interop.Libc.Statx Stat(int fd, string path, int flags, string what)
    {
        Interop.Libc.Statx st;
        const uint Mask = Interop.Libc.STATX_TYPE | Interop.Libc.STATX_MODE | Interop.Libc.STATX_UID | Interop.Libc.STATX_GID | Interop.Libc.STATX_NLINK | Interop.Libc.STATX_INO;
        if (Interop.Libc.statx(fd, path, flags, Mask, &st) != 0)
        {
            int errno = Interop.Libc.LastErrno;
            throw new DurableFolderException($"cannot inspect {what}: {Interop.Libc.StrError(errno)}", errno);
        }

        return st;
    }

    /// <summary>A regular file of that name, owned by the broker's uid (not followed if a symlink).</summary>
    private bool IsOwnLeftover(string name)
    {
        using var dir = Hold();
        Interop.Libc.Statx st;
        return Interop.Libc.statx(dir.Fd, name, Interop.Libc.AT_SYMLINK_NOFOLLOW, Interop.Libc.STATX_TYPE | Interop.Libc.STATX_UID, &st) == 0
            && (st.stx_mode & Interop.Libc.S_IFMT) == Interop.Libc.S_IFREG && st.stx_uid == Interop.Libc.geteuid();
    }

    private static bool IsSymlink(int dirfd, string path)
    {
        Interop.Libc.Statx st;
        return Interop.Libc.statx(dirfd, path, Interop.Libc.AT_SYMLINK_NOFOLLOW, Interop.Libc.STATX_TYPE, &st) == 0
            && (st.stx_mode & Interop.Libc.S_IFMT) == Interop.Libc.S_IFLNK;
    }

    /// <summary>One path component: names come from the broker, or from metadata read back (whose file names must
    /// not lead out of the folder).</summary>
    private static void CheckName(string name)
    {
        if (name.Length == 0 || name is "." or ".." || name.Contains('/', StringComparison.Ordinal) || name.Contains('\0', StringComparison.Ordinal))
        {
            throw new DurableFolderException($"'{name}' is not a plain file name", Interop.Libc.EINVAL);
        }
    }
}

/// <summary>A durable folder or file cannot be used; <see cref="Errno"/> says why (ELOOP: a symlink, not followed).</summary>
internal sealed class DurableFolderException(string message, int errno) : IOException(message)
{
    public int Errno { get; } = errno;
}
