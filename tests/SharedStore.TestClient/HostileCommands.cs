using System.Diagnostics;
using System.Globalization;
using System.Text;
using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.TestClient;

/// <summary>
/// What a hostile member does with the descriptors the broker hands it (issue 13, finding 1). The client library closes
/// descriptors once it has mapped them, so these commands speak the wire protocol on a connection of their own and keep
/// them. Every attack answers <c>PATH=OUTCOME</c> pairs: OUTCOME is the errno name of the kernel's refusal (EACCES…),
/// or WROTE / SHRUNK / GREW / SEALED when the attack got through (a WROTE attack really wrote 0xEE over the object's
/// first bytes, so the creator's read-back sees it).
/// <list type="bullet">
/// <item><c>raw-join SOCKET CONTAINER OBJECT</c> → <c>ok readonly=0|1 offset=N size=N</c>: hello, container_join and
/// object_join on a connection of its own; keeps the data and lock descriptors.</item>
/// <item><c>raw-channel</c> → <c>ok length=N</c>: async_open on that connection; keeps the channel descriptor.</item>
/// <item><c>attack-data</c> → every way to write through the data descriptor: reopen-rdwr, reopen-wronly (open of
/// /proc/self/fd/N), mmap-rw, mprotect (PROT_READ mapping made PROT_WRITE), procmem (pwrite into the read-only
/// mapping through /proc/self/mem), pwrite, fchmod (then reopen), punch (FALLOC_FL_PUNCH_HOLE zeroes pages), seal
/// (F_SEAL_FUTURE_WRITE would deny every later writer).</item>
/// <item><c>attack-pass</c> → the same attacks, run by a child process (same user) that inherits the descriptor:
/// the open file description SCM_RIGHTS would pass.</item>
/// <item><c>attack-size</c> → ftruncate shrink and grow of the data, lock (and channel) descriptors: a memfd that
/// shrinks under other processes' mappings makes them fault (SIGBUS), the broker's included.</item>
/// </list>
/// </summary>
internal sealed unsafe class HostileCommands : IDisposable
{
    private const byte Mark = 0xEE;
    private const int MarkBytes = 4096;
    private SeqPacketSocket? _socket;
    private SafeFd? _data;
    private SafeFd? _locks;
    private SafeFd? _channel;
    private long _dataLength;
    private long _offset;
    private long _size;
    private ulong _nextId;

    /// <summary>Runs a hostile command; null when <paramref name="a"/> is not one.</summary>
    public string? Execute(string[] a)
    {
        switch (a[0])
        {
            case "raw-join":
            {
                Dispose();
                _socket = SeqPacketSocket.TryConnect(a[1], out int errno) ?? throw new SharedStoreException(ErrorCode.BrokerUnavailable, $"connect: errno {errno}");
                Call(new Request { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion, ClientName = "hostile" } }).Fds.ForEach(f => f.Dispose());
                var c = Call(new Request { ContainerJoin = new ContainerJoin { Name = a[2] } }).Response.Container;
                var (resp, fds) = Call(new Request { ObjectJoin = new ObjectJoin { ContainerId = c.ContainerId, Name = a[3] } });
                if (fds.Count != 2 || resp.Segments.Count != 1)
                {
                    throw new InvalidOperationException($"object_join brought {fds.Count} descriptors for {resp.Segments.Count} segments");
                }

                (_data, _locks) = (fds[0], fds[1]);
                _dataLength = (long)resp.Segments[0].DataLength;
                _offset = (long)resp.Object.DataOffset;
                _size = (long)resp.Object.Size;
                return $"ok readonly={(resp.Segments[0].ReadOnly ? 1 : 0)} offset={_offset} size={_size}";
            }

            case "raw-channel":
            {
                var (resp, fds) = Call(new Request { AsyncOpen = new AsyncOpen() });
                _channel = fds.Single();
                return $"ok length={resp.AsyncChannel.Length}";
            }

            case "attack-data":
                return "ok " + Attack(Data.Fd, _dataLength, _offset, Math.Min(_size, MarkBytes));

            case "attack-pass":
                return "ok " + AttackFromChild();

            case "attack-size":
            {
                var outcomes = new List<string> { Resize("data", Data.Fd, _dataLength), Resize("lock", Locks.Fd, FileLength(Locks.Fd)) };
                if (_channel is not null)
                {
                    outcomes.Add(Resize("channel", _channel.Fd, FileLength(_channel.Fd)));
                }

                return "ok " + string.Join(' ', outcomes);
            }

            default:
                return null;
        }
    }

    /// <summary>The child of <c>attack-pass</c>: <c>attack-fd FD MAPLENGTH OFFSET LENGTH</c> prints one outcome line.</summary>
    public static int RunChild(string[] args)
    {
        int fd = int.Parse(args[1], CultureInfo.InvariantCulture);
        // Show that the descriptor really arrived: an attack on a descriptor that is not there fails for that reason.
        string inherited = Interop.Libc.fcntl(fd, Interop.Libc.F_GETFD, 0) < 0 ? Errno(Interop.Libc.LastErrno) : "1";
        Console.WriteLine($"inherited={inherited} " + Attack(fd, long.Parse(args[2], CultureInfo.InvariantCulture),
            long.Parse(args[3], CultureInfo.InvariantCulture), long.Parse(args[4], CultureInfo.InvariantCulture)));
        return 0;
    }

    public void Dispose()
    {
        _data?.Dispose();
        _locks?.Dispose();
        _channel?.Dispose();
        _socket?.Dispose();
        (_data, _locks, _channel, _socket) = (null, null, null, null);
    }

    private SafeFd Data => _data ?? throw new InvalidOperationException("raw-join first");

    private SafeFd Locks => _locks ?? throw new InvalidOperationException("raw-join first");

    private (Response Response, List<SafeFd> Fds) Call(Request request)
    {
        var socket = _socket ?? throw new InvalidOperationException("raw-join first");
        request.Id = ++_nextId;
        if (!socket.Send(request.ToByteArray()))
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, "send failed");
        }

        byte[] buffer = new byte[ProtocolConstants.MaxMessageBytes];
        var fds = new List<SafeFd>();
        int n = socket.Receive(buffer, fds);
        if (n <= 0)
        {
            throw new SharedStoreException(ErrorCode.BrokerUnavailable, "the broker closed the connection");
        }

        var resp = Response.Parser.ParseFrom(buffer, 0, n);
        if (resp.Error != Protocol.ErrorCode.Ok)
        {
            fds.ForEach(f => f.Dispose());
            throw new SharedStoreException((ErrorCode)resp.Error, resp.Message);
        }

        return (resp, fds);
    }

    private string AttackFromChild()
    {
        // A duplicate without O_CLOEXEC is inherited across the child's fork and exec.
        int inherited = Interop.Libc.fcntl(Data.Fd, 0 /* F_DUPFD */, 100);
        if (inherited < 0)
        {
            throw new IOException($"F_DUPFD: {Errno(Interop.Libc.LastErrno)}");
        }

        try
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false, RedirectStandardOutput = true };
            foreach (string arg in new[] { typeof(HostileCommands).Assembly.Location, "attack-fd", Str(inherited), Str(_dataLength), Str(_offset), Str(Math.Min(_size, MarkBytes)) })
            {
                psi.ArgumentList.Add(arg);
            }

            using var child = Process.Start(psi)!;
            string line = child.StandardOutput.ReadLine() ?? "";
            if (!child.WaitForExit(30_000))
            {
                child.Kill();
                throw new TimeoutException("the attacking child did not exit within 30 s");
            }

            return $"child={child.Id} {line}";
        }
        finally
        {
            _ = Interop.Libc.close(inherited);
        }
    }

    /// <summary>Tries every way to write [offset, offset+length) through <paramref name="fd"/>.</summary>
    private static string Attack(int fd, long mapLength, long offset, long length)
    {
        var outcomes = new StringBuilder();
        void Report(string path, string outcome) => outcomes.Append(outcomes.Length == 0 ? "" : " ").Append(path).Append('=').Append(outcome);
        string self = $"/proc/self/fd/{fd}";

        int rw = Interop.Libc.open(self, Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, 0);
        Report("reopen-rdwr", rw < 0 ? Errno(Interop.Libc.LastErrno) : WriteAndClose(rw, mapLength, offset, length));

        int wo = Interop.Libc.open(self, Interop.Libc.O_WRONLY | Interop.Libc.O_CLOEXEC, 0);
        Report("reopen-wronly", wo < 0 ? Errno(Interop.Libc.LastErrno) : PWriteAndClose(wo, offset, length));

        nint map = Interop.Libc.mmap(0, (nuint)mapLength, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_SHARED, fd, 0);
        Report("mmap-rw", map == Interop.Libc.MAP_FAILED ? Errno(Interop.Libc.LastErrno) : FillAndUnmap(map, mapLength, offset, length));

        map = Interop.Libc.mmap(0, (nuint)mapLength, Interop.Libc.PROT_READ, Interop.Libc.MAP_SHARED, fd, 0);
        if (map == Interop.Libc.MAP_FAILED)
        {
            Report("mprotect", "mmap-read-" + Errno(Interop.Libc.LastErrno));
            Report("procmem", "mmap-read-" + Errno(Interop.Libc.LastErrno));
        }
        else
        {
            Report("procmem", WriteThroughProcMem(map + (nint)offset, length));
            Report("mprotect", Interop.Libc.mprotect(map, (nuint)mapLength, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE) != 0
                ? Errno(Interop.Libc.LastErrno)
                : FillAndUnmap(map, mapLength, offset, length));
            _ = Interop.Libc.munmap(map, (nuint)mapLength);
        }

        Report("pwrite", PWrite(fd, offset, length));

        if (Interop.Libc.fchmod(fd, 0x1B6 /* 0666 */) != 0)
        {
            Report("fchmod", Errno(Interop.Libc.LastErrno));
        }
        else
        {
            int again = Interop.Libc.open(self, Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, 0);
            Report("fchmod", again < 0 ? "CHMOD-" + Errno(Interop.Libc.LastErrno) : WriteAndClose(again, mapLength, offset, length));
        }

        long page = offset & ~4095L;
        Report("punch", Interop.Libc.fallocate(fd, Interop.Libc.FALLOC_FL_PUNCH_HOLE | Interop.Libc.FALLOC_FL_KEEP_SIZE, page, 4096) != 0
            ? Errno(Interop.Libc.LastErrno)
            : "WROTE"); // zeroed a page of the object
        Report("seal", Interop.Libc.fcntl(fd, Interop.Libc.F_ADD_SEALS, Interop.Libc.F_SEAL_FUTURE_WRITE) != 0 ? Errno(Interop.Libc.LastErrno) : "SEALED");
        return outcomes.ToString();
    }

    private static string WriteAndClose(int fd, long mapLength, long offset, long length)
    {
        try
        {
            nint map = Interop.Libc.mmap(0, (nuint)mapLength, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_SHARED, fd, 0);
            return map == Interop.Libc.MAP_FAILED ? PWrite(fd, offset, length) : FillAndUnmap(map, mapLength, offset, length);
        }
        finally
        {
            _ = Interop.Libc.close(fd);
        }
    }

    private static string PWriteAndClose(int fd, long offset, long length)
    {
        try
        {
            return PWrite(fd, offset, length);
        }
        finally
        {
            _ = Interop.Libc.close(fd);
        }
    }

    private static string FillAndUnmap(nint map, long mapLength, long offset, long length)
    {
        new Span<byte>((byte*)map + offset, (int)length).Fill(Mark);
        _ = Interop.Libc.munmap(map, (nuint)mapLength);
        return "WROTE";
    }

    private static string PWrite(int fd, long offset, long length)
    {
        byte[] marks = new byte[length];
        marks.AsSpan().Fill(Mark);
        fixed (byte* p = marks)
        {
            long r = Interop.Libc.PWrite(fd, p, (nuint)length, offset);
            return r < 0 ? Errno((int)-r) : "WROTE";
        }
    }

    /// <summary>/proc/self/mem writes with FOLL_FORCE, which gets through a read-only private mapping (copy on write)
    /// but must not through a read-only shared one.</summary>
    private static string WriteThroughProcMem(nint address, long length)
    {
        int mem = Interop.Libc.open("/proc/self/mem", Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, 0);
        if (mem < 0)
        {
            return "open-" + Errno(Interop.Libc.LastErrno);
        }

        try
        {
            return PWrite(mem, address, length);
        }
        finally
        {
            _ = Interop.Libc.close(mem);
        }
    }

    private static string Resize(string what, int fd, long length)
    {
        string shrink = Interop.Libc.ftruncate(fd, 0) != 0 ? Errno(Interop.Libc.LastErrno) : "SHRUNK";
        string grow = Interop.Libc.ftruncate(fd, length + (1L << 20)) != 0 ? Errno(Interop.Libc.LastErrno) : "GREW";
        return $"{what}-shrink={shrink} {what}-grow={grow}";
    }

    private static long FileLength(int fd)
    {
        Interop.Libc.Statx st;
        return Interop.Libc.FStatx(fd, Interop.Libc.STATX_SIZE, &st) == 0 ? (long)st.stx_size : throw new IOException($"statx: {Errno(Interop.Libc.LastErrno)}");
    }

    private static string Str(long v) => v.ToString(CultureInfo.InvariantCulture);

    private static string Errno(int errno) => errno switch
    {
        1 => "EPERM",
        5 => "EIO",
        9 => "EBADF",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        _ => $"E{errno}",
    };
}
