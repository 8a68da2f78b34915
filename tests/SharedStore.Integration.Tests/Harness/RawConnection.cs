using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.Integration.Tests.Harness;

/// <summary>
/// A bare <see cref="SeqPacketSocket"/> connection to a broker, without the client library: sends whatever bytes a
/// test wants (garbage, out-of-order requests, pipelined requests) and reads raw responses. Every receive has a
/// timeout; descriptors that come with a response are closed at once.
/// </summary>
internal sealed class RawConnection : IDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);
    private readonly SeqPacketSocket _socket;
    private readonly byte[] _buffer = new byte[ProtocolConstants.MaxMessageBytes];
    private ulong _nextId = 1000;
    private bool _disposed;

    private RawConnection(SeqPacketSocket socket) => _socket = socket;

    public static RawConnection Open(string socketPath)
    {
        var s = SeqPacketSocket.TryConnect(socketPath, out int errno);
        if (s is null)
        {
            Assert.Fail($"connect({socketPath}) failed: errno {errno}");
        }

        return new RawConnection(s!);
    }

    /// <summary>Opens a connection and completes the hello handshake.</summary>
    public static RawConnection OpenWithHello(string socketPath)
    {
        var c = Open(socketPath);
        var r = c.Call(new Request { Hello = new Hello { ProtocolVersion = ProtocolConstants.ProtocolVersion, ClientName = "raw" } });
        Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.Ok), r.Message);
        return c;
    }

    /// <summary>Whether the broker still holds the connection open (false once it was closed).</summary>
    public bool SendRaw(ReadOnlySpan<byte> bytes) => _socket.Send(bytes);

    /// <summary>Sends a request (assigning an id if it has none) and returns the id.</summary>
    public ulong Send(Request request)
    {
        if (request.Id == 0)
        {
            request.Id = _nextId++;
        }

        Assert.That(_socket.Send(request.ToByteArray()), Is.True, "the broker closed the connection");
        return request.Id;
    }

    /// <summary>Sends a hand-built frame (<see cref="WireMessage"/>) whose id is <paramref name="id"/> and returns the
    /// response with that id (other responses in between are skipped).</summary>
    public Response CallFrame(ulong id, byte[] frame, TimeSpan? timeout = null)
    {
        Assert.That(_socket.Send(frame), Is.True, "the broker closed the connection");
        while (true)
        {
            var r = Receive(timeout);
            Assert.That(r, Is.Not.Null, "the broker closed the connection instead of answering");
            if (r!.Id == id)
            {
                return r;
            }
        }
    }

    /// <summary>The next message, or null when the broker closed the connection. Fails the test when nothing arrives
    /// within <paramref name="timeout"/>.</summary>
    public Response? Receive(TimeSpan? timeout = null)
    {
        var fds = new List<SafeFd>();
        var t = Task.Run(() => _socket.Receive(_buffer, fds));
        if (!t.Wait(timeout ?? DefaultTimeout))
        {
            _socket.Shutdown();
            t.Wait(DefaultTimeout);
            Assert.Fail($"no message from the broker within {timeout ?? DefaultTimeout}");
        }

        foreach (var fd in fds)
        {
            fd.Dispose();
        }

        int n = t.Result;
        return n <= 0 ? null : Response.Parser.ParseFrom(_buffer, 0, n);
    }

    /// <summary>Sends a request and returns the response with its id (other responses in between are skipped).</summary>
    public Response Call(Request request, TimeSpan? timeout = null)
    {
        ulong id = Send(request);
        while (true)
        {
            var r = Receive(timeout);
            Assert.That(r, Is.Not.Null, $"the broker closed the connection instead of answering {request.BodyCase}");
            if (r!.Id == id)
            {
                return r;
            }
        }
    }

    /// <summary>Waits until the broker closes the connection (EOF), skipping any messages before it.</summary>
    public void ExpectClosed(TimeSpan? timeout = null)
    {
        for (int i = 0; i < 100; i++)
        {
            if (Receive(timeout) is null)
            {
                return;
            }
        }

        Assert.Fail("the broker kept the connection open");
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return; // the descriptor number may already belong to someone else
        }

        _disposed = true;
        _socket.Shutdown();
        _socket.Dispose();
    }
}
