using System.Runtime.Versioning;

namespace SharedStore.Protocol;

/// <summary>Peer credentials of a Unix-socket connection, as the kernel recorded them at connect time.</summary>
internal readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid, uint[] Groups)
{
    public bool IsRoot => Uid == 0;

    public bool InGroup(long gid) => gid >= 0 && (Gid == gid || Array.IndexOf(Groups, (uint)gid) >= 0);
}

/// <summary>
/// An AF_UNIX SOCK_SEQPACKET socket: message boundaries are kept by the kernel and file descriptors travel as
/// SCM_RIGHTS ancillary data on a message. Blocking I/O: the broker runs one thread per connection and the client
/// one receive thread, so there is no need for an event loop.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class SeqPacketSocket : IDisposable
{
    private readonly SafeFd _fd;
    private readonly object _sendGate = new();

    private SeqPacketSocket(SafeFd fd) => _fd = fd;

    public int Fd => _fd.Fd;

    public static SeqPacketSocket Listen(string path, int socketMode)
    {
        int fd = Interop.Libc.socket(Interop.Libc.AF_UNIX, Interop.Libc.SOCK_SEQPACKET | Interop.Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            throw Interop.Libc.Error("socket", Interop.Libc.LastErrno);
        }

        var s = new SeqPacketSocket(new SafeFd(fd));
        uint len = Interop.Libc.MakeSockaddr(path, out var addr);
        if (Interop.Libc.bind(fd, &addr, len) != 0)
        {
            int errno = Interop.Libc.LastErrno;
            s.Dispose();
            throw Interop.Libc.Error($"bind({path})", errno);
        }

        _ = Interop.Libc.chmod(path, socketMode);
        if (Interop.Libc.listen(fd, 128) != 0)
        {
            int errno = Interop.Libc.LastErrno;
            s.Dispose();
            throw Interop.Libc.Error("listen", errno);
        }

        return s;
    }

    /// <summary>Connects; returns null (with the errno) when nobody listens there, which is an expected outcome.</summary>
    public static SeqPacketSocket? TryConnect(string path, out int errno)
    {
        int fd = Interop.Libc.socket(Interop.Libc.AF_UNIX, Interop.Libc.SOCK_SEQPACKET | Interop.Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            throw Interop.Libc.Error("socket", Interop.Libc.LastErrno);
        }

        var s = new SeqPacketSocket(new SafeFd(fd));
        uint len = Interop.Libc.MakeSockaddr(path, out var addr);
        while (true)
        {
            if (Interop.Libc.connect(fd, &addr, len) == 0)
            {
                errno = 0;
                RaiseSendBuffer(fd);
                return s;
            }

            errno = Interop.Libc.LastErrno;
            if (errno != Interop.Libc.EINTR)
            {
                s.Dispose();
                return null;
            }
        }
    }

    /// <summary>Blocks until a client connects; null once the socket was shut down.</summary>
    public SeqPacketSocket? Accept()
    {
        while (true)
        {
            int fd = Interop.Libc.accept4(_fd.Fd, null, null, Interop.Libc.SOCK_CLOEXEC);
            if (fd >= 0)
            {
                RaiseSendBuffer(fd);
                return new SeqPacketSocket(new SafeFd(fd));
            }

            int errno = Interop.Libc.LastErrno;
            if (errno is Interop.Libc.EINTR or Interop.Libc.ECONNABORTED)
            {
                continue;
            }

            if (errno is Interop.Libc.EINVAL or Interop.Libc.EBADF)
            {
                return null; // shut down
            }

            if (errno is Interop.Libc.EMFILE or Interop.Libc.ENFILE)
            {
                Thread.Sleep(10); // out of descriptors: back off rather than spin
                continue;
            }

            throw Interop.Libc.Error("accept4", errno);
        }
    }

    /// <summary>A SEQPACKET message must fit the sender's SO_SNDBUF whole (else sendmsg fails with EMSGSIZE), and the
    /// default (net.core.wmem_default, 208 KiB) is below the protocol's <see cref="ProtocolConstants.MaxMessageBytes"/>.
    /// Best effort: the kernel caps the value at net.core.wmem_max.</summary>
    private static void RaiseSendBuffer(int fd)
    {
        int size = ProtocolConstants.MaxMessageBytes + (64 * 1024);
        _ = Interop.Libc.setsockopt(fd, Interop.Libc.SOL_SOCKET, Interop.Libc.SO_SNDBUF, &size, sizeof(int));
    }

    /// <summary>Sets SO_SNDBUF (the kernel doubles the value and caps it at net.core.wmem_max). Test hook of the broker.</summary>
    public void SetSendBuffer(int bytes) =>
        _ = Interop.Libc.setsockopt(_fd.Fd, Interop.Libc.SOL_SOCKET, Interop.Libc.SO_SNDBUF, &bytes, sizeof(int));

    public PeerCredentials GetPeerCredentials()
    {
        Interop.Libc.Ucred cred;
        uint len = (uint)sizeof(Interop.Libc.Ucred);
        if (Interop.Libc.getsockopt(_fd.Fd, Interop.Libc.SOL_SOCKET, Interop.Libc.SO_PEERCRED, &cred, &len) != 0)
        {
            throw Interop.Libc.Error("getsockopt(SO_PEERCRED)", Interop.Libc.LastErrno);
        }

        // SO_PEERGROUPS (Linux 4.13+): the supplementary groups the peer had at connect time.
        uint[] groups = new uint[64];
        while (true)
        {
            uint glen = (uint)(groups.Length * sizeof(uint));
            fixed (uint* g = groups)
            {
                if (Interop.Libc.getsockopt(_fd.Fd, Interop.Libc.SOL_SOCKET, Interop.Libc.SO_PEERGROUPS, g, &glen) == 0)
                {
                    Array.Resize(ref groups, (int)(glen / sizeof(uint)));
                    break;
                }
            }

            int errno = Interop.Libc.LastErrno;
            if (errno == Interop.Libc.ERANGE && glen > groups.Length * sizeof(uint))
            {
                groups = new uint[glen / sizeof(uint)];
                continue;
            }

            groups = [];
            break;
        }

        return new PeerCredentials(cred.pid, cred.uid, cred.gid, groups);
    }

    /// <summary>Sends one message with optional descriptors. Thread-safe. Returns false when the peer is gone (or the
    /// message could not be sent; <see cref="TrySend"/> says why).</summary>
    public bool Send(ReadOnlySpan<byte> message, ReadOnlySpan<int> fds = default) => TrySend(message, fds, out _);

    /// <summary>Sends one message with optional descriptors. Thread-safe. False with the errno when the kernel refused
    /// it: EPIPE/ECONNRESET when the peer is gone, EBADF after shutdown, EMSGSIZE when the message exceeds the send
    /// buffer, ENOBUFS/ENOMEM when the kernel is short of memory.</summary>
    public bool TrySend(ReadOnlySpan<byte> message, ReadOnlySpan<int> fds, out int errno)
    {
        errno = 0;
        int controlLen = fds.Length == 0 ? 0 : CmsgSpace(fds.Length * sizeof(int));
        byte* control = stackalloc byte[Math.Max(controlLen, 1)];
        fixed (byte* data = message)
        {
            Interop.Libc.Iovec iov;
            iov.iov_base = data;
            iov.iov_len = (nuint)message.Length;
            Interop.Libc.Msghdr msg = default;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            if (fds.Length > 0)
            {
                new Span<byte>(control, controlLen).Clear();
                var cmsg = (Interop.Libc.Cmsghdr*)control;
                cmsg->cmsg_len = (nuint)CmsgLen(fds.Length * sizeof(int));
                cmsg->cmsg_level = Interop.Libc.SOL_SOCKET;
                cmsg->cmsg_type = Interop.Libc.SCM_RIGHTS;
                fds.CopyTo(new Span<int>(control + CmsgHeaderSize, fds.Length));
                msg.msg_control = control;
                msg.msg_controllen = (nuint)controlLen;
            }

            lock (_sendGate)
            {
                // Hold a reference across the syscall: a concurrent Dispose must not close the descriptor (and let its
                // number be reused by another connection) while we send on it.
                bool added = false;
                try
                {
                    _fd.DangerousAddRef(ref added);
                    while (true)
                    {
                        nint r = Interop.Libc.sendmsg(_fd.Fd, &msg, Interop.Libc.MSG_NOSIGNAL);
                        if (r >= 0)
                        {
                            return true;
                        }

                        errno = Interop.Libc.LastErrno;
                        if (errno == Interop.Libc.EINTR)
                        {
                            continue;
                        }

                        return false;
                    }
                }
                catch (ObjectDisposedException)
                {
                    errno = Interop.Libc.EBADF;
                    return false;
                }
                finally
                {
                    if (added)
                    {
                        _fd.DangerousRelease();
                    }
                }
            }
        }
    }

    /// <summary>Receives one message into <paramref name="buffer"/>; received descriptors are appended to
    /// <paramref name="fds"/>. Returns the length, 0 on orderly EOF, or -1 when the connection broke.</summary>
    public int Receive(byte[] buffer, List<SafeFd> fds)
    {
        int controlLen = CmsgSpace(Protocol.ProtocolConstants.MaxFdsPerMessage * sizeof(int));
        byte* control = stackalloc byte[controlLen];
        fixed (byte* data = buffer)
        {
            Interop.Libc.Iovec iov;
            iov.iov_base = data;
            iov.iov_len = (nuint)buffer.Length;
            Interop.Libc.Msghdr msg = default;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = (nuint)controlLen;
            nint r;
            bool added = false;
            try
            {
                _fd.DangerousAddRef(ref added);
                while (true)
                {
                    r = Interop.Libc.recvmsg(_fd.Fd, &msg, Interop.Libc.MSG_CMSG_CLOEXEC);
                    if (r >= 0)
                    {
                        break;
                    }

                    if (Interop.Libc.LastErrno != Interop.Libc.EINTR)
                    {
                        return -1;
                    }
                }
            }
            catch (ObjectDisposedException)
            {
                return -1;
            }
            finally
            {
                if (added)
                {
                    _fd.DangerousRelease();
                }
            }

            // Collect descriptors first so none leaks even if the message is then rejected.
            if (msg.msg_controllen >= (nuint)CmsgHeaderSize)
            {
                var cmsg = (Interop.Libc.Cmsghdr*)control;
                while ((byte*)cmsg + CmsgHeaderSize <= control + (int)msg.msg_controllen)
                {
                    if (cmsg->cmsg_level == Interop.Libc.SOL_SOCKET && cmsg->cmsg_type == Interop.Libc.SCM_RIGHTS)
                    {
                        int n = ((int)cmsg->cmsg_len - CmsgHeaderSize) / sizeof(int);
                        int* p = (int*)((byte*)cmsg + CmsgHeaderSize);
                        for (int i = 0; i < n; i++)
                        {
                            fds.Add(new SafeFd(p[i]));
                        }
                    }

                    int step = CmsgAlign((int)cmsg->cmsg_len);
                    if (step == 0)
                    {
                        break;
                    }

                    cmsg = (Interop.Libc.Cmsghdr*)((byte*)cmsg + step);
                }
            }

            if ((msg.msg_flags & Interop.Libc.MSG_TRUNC) != 0)
            {
                return -1; // a message larger than the protocol allows: treat the peer as broken
            }

            return (int)r;
        }
    }

    /// <summary>Whether the peer has closed the connection (a non-blocking peek reads end of file). For tests and tools.</summary>
    public bool PeerClosed()
    {
        byte b;
        nint r = Interop.Libc.recv(_fd.Fd, &b, 1, Interop.Libc.MSG_PEEK | Interop.Libc.MSG_DONTWAIT);
        return r == 0 || (r < 0 && Interop.Libc.LastErrno is not (Interop.Libc.EAGAIN or Interop.Libc.EINTR));
    }

    /// <summary>How long a Receive may block before it fails (-1, as for a broken connection); zero: for ever.</summary>
    public void SetReceiveTimeout(TimeSpan timeout) => SetTimeout(Interop.Libc.SO_RCVTIMEO, timeout);

    /// <summary>How long a Send may wait for room in the peer's buffer before it fails (false, as for a gone peer);
    /// zero: for ever.</summary>
    public void SetSendTimeout(TimeSpan timeout) => SetTimeout(Interop.Libc.SO_SNDTIMEO, timeout);

    private void SetTimeout(int option, TimeSpan timeout)
    {
        long us = Math.Max(0, (long)timeout.TotalMicroseconds);
        var tv = new Interop.Libc.Timeval { tv_sec = us / 1_000_000, tv_usec = us % 1_000_000 };
        _ = Interop.Libc.setsockopt(_fd.Fd, Interop.Libc.SOL_SOCKET, option, &tv, (uint)sizeof(Interop.Libc.Timeval));
    }

    /// <summary>Wakes a thread blocked in Receive or Accept on this socket (they return EOF / null).</summary>
    public void Shutdown() => _ = Interop.Libc.shutdown(_fd.Fd, Interop.Libc.SHUT_RDWR);

    public void Dispose() => _fd.Dispose();

    private static int CmsgHeaderSize => CmsgAlign(sizeof(Interop.Libc.Cmsghdr));

    private static int CmsgAlign(int n) => (n + sizeof(nuint) - 1) & ~(sizeof(nuint) - 1);

    private static int CmsgLen(int dataLen) => CmsgHeaderSize + dataLen;

    private static int CmsgSpace(int dataLen) => CmsgHeaderSize + CmsgAlign(dataLen);
}
