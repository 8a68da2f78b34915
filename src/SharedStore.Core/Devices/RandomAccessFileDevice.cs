using System.Runtime.Versioning;

namespace SharedStore.Devices;

/// <summary>
/// A device over a regular file or a block device, opened according to a <see cref="DeviceMode"/>. Transfers use
/// pread/pwrite (thread-pool scheduler) or io_uring READ/WRITE (io_uring scheduler) on the same descriptor.
/// </summary>
/// <remarks>
/// <para>With <see cref="DeviceMode.Direct"/> the alignment rule comes from statx(STATX_DIOALIGN) where the
/// file system reports it, else from ioctl(BLKSSZGET) for a block device, else 512 bytes (the logical block size
/// of nearly every disk). Misaligned transfers are refused before they reach the kernel, because the kernel's own
/// answer (EINVAL) does not say which of offset, length or address was wrong.</para>
/// <para><see cref="DeviceMode.WriteThrough"/> opens with O_DSYNC (no alignment rule); <see cref="DeviceMode.Temporary"/>
/// makes an unnamed file (O_TMPFILE) in the path's directory, so nothing is left after Dispose or a crash.</para>
/// </remarks>
[SupportedOSPlatform("linux")]
public sealed partial class RandomAccessFileDevice : RandomAccessDevice
{
    private const int DefaultDirectAlignment = 1 << 9; // 512

    private readonly SafeFd _fd;

    /// <summary>Opens (or creates) the file at <paramref name="path"/>.</summary>
    /// <param name="path">The file or block device path.</param>
    /// <param name="mode">How to open it.</param>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty, or <paramref name="mode"/> combines
    /// ReadOnly with Create or Truncate, or both access hints.</exception>
    /// <exception cref="DeviceException">open, statx or posix_fadvise failed (errno in <see cref="SharedStoreException.Errno"/>).</exception>
    public RandomAccessFileDevice(string path, DeviceMode mode)
        : this(path, mode, Open(path, mode, out SafeFd fd, out int offsetAlign, out int memoryAlign), fd, offsetAlign, memoryAlign)
    {
    }

    /// <summary>Takes over a descriptor opened by the caller (the broker opens durable files relative to a folder
    /// descriptor, with O_NOFOLLOW: docs/ARCHITECTURE.md §11). <paramref name="mode"/> says how it was opened
    /// (<see cref="DeviceMode.ReadOnly"/>, <see cref="DeviceMode.Direct"/>); the device owns and closes it.</summary>
    internal RandomAccessFileDevice(string name, SafeFd fd, DeviceMode mode)
        : this(name, mode, Adopt(fd, mode, out int offsetAlign, out int memoryAlign), fd, offsetAlign, memoryAlign)
    {
    }

    private RandomAccessFileDevice(string path, DeviceMode mode, bool opened, SafeFd fd, int offsetAlign, int memoryAlign)
        : base(path, mode, offsetAlign, memoryAlign)
    {
        _ = opened;
        _fd = fd;
    }

    /// <summary>The path the device was opened with.</summary>
    public string Path => Name;

    internal override SafeFd? FileHandle => _fd;

    /// <inheritdoc/>
    public override unsafe long Size
    {
        get
        {
            ThrowIfDisposed();
            Interop.Libc.Statx stx = default;
            bool added = false;
            try
            {
                _fd.DangerousAddRef(ref added);
                if (Interop.Libc.statx(_fd.Fd, string.Empty, Interop.Libc.AT_EMPTY_PATH, Interop.Libc.STATX_SIZE, &stx) != 0)
                {
                    DeviceThrowHelper.ThrowSyscall("statx", Name, Interop.Libc.LastErrno);
                }
            }
            finally
            {
                if (added)
                {
                    _fd.DangerousRelease();
                }
            }

            return (long)stx.stx_size;
        }
    }

    /// <inheritdoc/>
    public override void SetSize(long size)
    {
        ThrowIfDisposed();
        if (size < 0)
        {
            DeviceThrowHelper.ThrowArgumentOutOfRange(nameof(size), size, "Size must not be negative.");
        }

        if (IsReadOnly)
        {
            throw new DeviceException($"Device {Name} is read-only; cannot set its size.", Interop.Libc.EBADF, TransferStatus.ReadOnly);
        }

        int r = WithFd(fd => Retry(() => Interop.Libc.ftruncate(fd, size)));
        if (r != 0)
        {
            DeviceThrowHelper.ThrowSyscall("ftruncate", Name, -r);
        }
    }

    /// <inheritdoc/>
    public override void Flush(bool metadata = false)
    {
        ThrowIfDisposed();
        int r = WithFd(fd => Retry(() => metadata ? Interop.Libc.fsync(fd) : Interop.Libc.fdatasync(fd)));
        if (r != 0)
        {
            DeviceThrowHelper.ThrowSyscall(metadata ? "fsync" : "fdatasync", Name, -r);
        }
    }

    private protected override void DisposeCore() => _fd.Dispose();

    internal override unsafe TransferResult Transfer(RandomAccessOperation operation, long offset, byte* buffer, int length)
    {
        bool added = false;
        try
        {
            // AddRef: a concurrent Dispose must not close (and let the kernel reuse) the descriptor mid-transfer.
            _fd.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            return TransferResult.Fail(TransferStatus.DeviceClosed);
        }

        try
        {
            int fd = _fd.Fd;
            int done = 0;
            while (done < length)
            {
                nuint count = (nuint)Math.Min(length - done, MaxBytesPerCall);
                long r = operation == RandomAccessOperation.Read
                    ? Interop.Libc.PRead(fd, buffer + done, count, offset + done)
                    : Interop.Libc.PWrite(fd, buffer + done, count, offset + done);
                if (r < 0)
                {
                    // Bytes already moved are lost to the caller on error; the binding reports the error, which is
                    // what pread/pwrite users expect when a later chunk fails.
                    return TransferResult.FromErrno((int)-r);
                }

                if (operation == RandomAccessOperation.Read && (ulong)r < count)
                {
                    // A short pread of a regular file means end of file: report the short count. Looping would ask
                    // again at an unaligned offset, which O_DIRECT answers with EINVAL.
                    done += (int)r;
                    break;
                }

                if (r == 0)
                {
                    // A WRITE that moves nothing would loop forever (a READ got here only with a full count).
                    return TransferResult.FromErrno(Interop.Libc.EIO);
                }

                done += (int)r;
            }

            return TransferResult.Ok(done);
        }
        finally
        {
            if (added)
            {
                _fd.DangerousRelease();
            }
        }
    }

    private int WithFd(Func<int, int> call)
    {
        bool added = false;
        try
        {
            _fd.DangerousAddRef(ref added);
            return call(_fd.Fd);
        }
        finally
        {
            if (added)
            {
                _fd.DangerousRelease();
            }
        }
    }

    /// <summary>Runs a -1/errno syscall, retrying EINTR; returns 0 or -errno.</summary>
    private static int Retry(Func<int> call)
    {
        while (true)
        {
            if (call() == 0)
            {
                return 0;
            }

            int errno = Interop.Libc.LastErrno;
            if (errno != Interop.Libc.EINTR)
            {
                return -errno;
            }
        }
    }

    private static unsafe bool Open(string path, DeviceMode mode, out SafeFd fd, out int offsetAlign, out int memoryAlign)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        bool readOnly = (mode & DeviceMode.ReadOnly) != 0;
        if (readOnly && (mode & (DeviceMode.Create | DeviceMode.Truncate | DeviceMode.Temporary)) != 0)
        {
            DeviceThrowHelper.ThrowArgument(nameof(mode), "ReadOnly cannot be combined with Create, Truncate or Temporary.");
        }

        if ((mode & (DeviceMode.SequentialAccess | DeviceMode.RandomAccess)) == (DeviceMode.SequentialAccess | DeviceMode.RandomAccess))
        {
            DeviceThrowHelper.ThrowArgument(nameof(mode), "SequentialAccess and RandomAccess are exclusive hints.");
        }

        int flags = (readOnly ? Interop.Libc.O_RDONLY : Interop.Libc.O_RDWR) | Interop.Libc.O_CLOEXEC;
        if ((mode & DeviceMode.Create) != 0)
        {
            flags |= Interop.Libc.O_CREAT;
        }

        if ((mode & DeviceMode.Truncate) != 0)
        {
            flags |= Interop.Libc.O_TRUNC;
        }

        if ((mode & DeviceMode.Direct) != 0)
        {
            flags |= Interop.Libc.O_DIRECT;
        }

        if ((mode & DeviceMode.WriteThrough) != 0)
        {
            flags |= Interop.Libc.O_DSYNC;
        }

        int raw = (mode & DeviceMode.Temporary) != 0 ? OpenTemporary(path, flags) : OpenRetry(path, flags, 0x1B6); // 0666, narrowed by the umask
        if (raw < 0)
        {
            int errno = -raw;
            DeviceThrowHelper.ThrowSyscall((mode & DeviceMode.Direct) != 0 ? "open(O_DIRECT)" : "open", path, errno);
        }

        fd = new SafeFd(raw);
        try
        {
            offsetAlign = 1;
            memoryAlign = 1;
            if ((mode & DeviceMode.Direct) != 0)
            {
                QueryDirectAlignment(raw, out offsetAlign, out memoryAlign);
            }

            int advice = (mode & DeviceMode.SequentialAccess) != 0 ? Interop.Libc.POSIX_FADV_SEQUENTIAL
                : (mode & DeviceMode.RandomAccess) != 0 ? Interop.Libc.POSIX_FADV_RANDOM
                : -1;
            if (advice >= 0)
            {
                int r = Interop.Libc.posix_fadvise(raw, 0, 0, advice);
                if (r != 0)
                {
                    DeviceThrowHelper.ThrowSyscall("posix_fadvise", path, r);
                }
            }
        }
        catch
        {
            fd.Dispose();
            throw;
        }

        return true;
    }

    private static bool Adopt(SafeFd fd, DeviceMode mode, out int offsetAlign, out int memoryAlign)
    {
        ArgumentNullException.ThrowIfNull(fd);
        offsetAlign = 1;
        memoryAlign = 1;
        if ((mode & DeviceMode.Direct) != 0)
        {
            QueryDirectAlignment(fd.Fd, out offsetAlign, out memoryAlign);
        }

        return true;
    }

    /// <summary>open(2) retried on EINTR; the descriptor or -errno.</summary>
    private static int OpenRetry(string path, int flags, int permissions)
    {
        while (true)
        {
            int fd = Interop.Libc.open(path, flags, permissions);
            if (fd >= 0)
            {
                return fd;
            }

            int errno = Interop.Libc.LastErrno;
            if (errno != Interop.Libc.EINTR)
            {
                return -errno;
            }
        }
    }

    /// <summary>An unnamed file in the directory of <paramref name="path"/> (O_TMPFILE); where the file system
    /// refuses that, a new file at the path unlinked right after it is made. The descriptor or -errno.</summary>
    private static int OpenTemporary(string path, int flags)
    {
        // O_TMPFILE replaces O_CREAT (the kernel refuses both together); O_TRUNC means nothing on a new file.
        flags &= ~(Interop.Libc.O_CREAT | Interop.Libc.O_TRUNC);
        string directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? "/";
        const int OwnerOnly = 0x180; // 0600: a scratch file is nobody else's business
        int fd = OpenRetry(directory, flags | Interop.Libc.O_TMPFILE, OwnerOnly);
        if (fd >= 0 || (-fd != Interop.Libc.EOPNOTSUPP && -fd != Interop.Libc.EISDIR))
        {
            // EISDIR: a kernel before 3.11 took O_TMPFILE for O_DIRECTORY alone. Any other error is the caller's to see.
            return fd;
        }

        fd = OpenRetry(path, flags | Interop.Libc.O_CREAT | Interop.Libc.O_EXCL, OwnerOnly);
        if (fd >= 0 && Interop.Libc.unlink(path) != 0)
        {
            int errno = Interop.Libc.LastErrno;
            Interop.Libc.close(fd);
            return -errno;
        }

        return fd;
    }

    private static unsafe void QueryDirectAlignment(int fd, out int offsetAlign, out int memoryAlign)
    {
        offsetAlign = DefaultDirectAlignment;
        memoryAlign = DefaultDirectAlignment;
        Interop.Libc.Statx stx;
        if (Interop.Libc.statx(fd, string.Empty, Interop.Libc.AT_EMPTY_PATH,
                Interop.Libc.STATX_TYPE | Interop.Libc.STATX_DIOALIGN, &stx) == 0)
        {
            if ((stx.stx_mask & Interop.Libc.STATX_DIOALIGN) != 0 && stx.stx_dio_offset_align != 0)
            {
                offsetAlign = (int)stx.stx_dio_offset_align;
                memoryAlign = (int)Math.Max(1, stx.stx_dio_mem_align);
                return;
            }

            if ((stx.stx_mode & Interop.Libc.S_IFMT) == Interop.Libc.S_IFBLK)
            {
                int sector;
                if (Interop.Libc.ioctl_int(fd, Interop.Libc.BLKSSZGET, &sector) == 0 && IsPowerOfTwo(sector))
                {
                    offsetAlign = sector;
                    memoryAlign = sector;
                }
            }
        }
    }
}
