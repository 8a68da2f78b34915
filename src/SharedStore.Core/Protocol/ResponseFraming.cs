using Google.Protobuf;

namespace SharedStore.Protocol;

/// <summary>
/// Replies of any size over a datagram socket (docs/ARCHITECTURE.md §6). A SEQPACKET datagram must fit the sender's
/// socket buffer whole and the receiver's buffer (<see cref="ProtocolConstants.MaxMessageBytes"/>), so a reply that
/// grows with the broker's state — <c>list</c> with 100 000 objects, <c>holders</c> of a large object, <c>status</c> —
/// could not be sent at all (issue 13, finding 4: the send failed with EMSGSIZE and the client waited out its timeout).
/// <para><b>Framing.</b> A reply of at most <see cref="PartBytes"/> serialized bytes is one datagram, as before. A larger
/// one is serialized once and sent as consecutive datagrams of its id that carry only <c>part</c> (a slice of those
/// bytes) and <c>more</c> (set on all but the last); descriptors ride on the last. The receiver
/// (<see cref="Assembler"/>) concatenates the parts and parses the whole reply. It is one snapshot: the broker builds
/// it under its state lock as before; only the sending is split. One generic mechanism rather than paging per request
/// kind: every reply is covered, also those added later, and no request needs a cursor whose meaning shifts while
/// containers come and go.</para>
/// <para><b>Part size.</b> 128 KiB is below the smallest send buffer a datagram meets on a stock Linux (SO_SNDBUF
/// defaults to net.core.wmem_default, 208 KiB; the sockets ask for more, up to net.core.wmem_max), so a part is never
/// refused for its size; each part costs one sendmsg and one recvmsg, about 80 of them for 10 MB.</para>
/// </summary>
internal static class ResponseFraming
{
    /// <summary>Largest serialized reply sent as one datagram, and the size of each part of a larger one (1 &lt;&lt; 17, 128 KiB).</summary>
    public const int PartBytes = 1 << 17;

    /// <summary>Largest reply a receiver assembles (1 &lt;&lt; 30, 1 GiB): a bound against a peer that never ends one.</summary>
    public const long MaxResponseBytes = 1L << 30;

    /// <summary>Sends <paramref name="response"/>, in parts if it is larger than <see cref="PartBytes"/>. False with the
    /// errno of the first datagram the kernel refused (<see cref="SeqPacketSocket.TrySend"/>); the parts before it were
    /// sent. <paramref name="length"/> is the serialized size of the whole reply.</summary>
    public static bool TrySend(SeqPacketSocket socket, Response response, ReadOnlySpan<int> fds, out int length, out int errno)
    {
        byte[] whole = response.ToByteArray();
        length = whole.Length;
        if (whole.Length <= PartBytes)
        {
            return socket.TrySend(whole, fds, out errno);
        }

        foreach (var part in Split(response.Id, whole))
        {
            if (!socket.TrySend(part.ToByteArray(), part.More ? default : fds, out errno))
            {
                return false;
            }
        }

        errno = 0;
        return true;
    }

    /// <summary>The parts of a reply whose serialized bytes are <paramref name="whole"/>, in order.</summary>
    public static IEnumerable<Response> Split(ulong id, byte[] whole)
    {
        for (int at = 0; at < whole.Length; at += PartBytes)
        {
            int n = Math.Min(PartBytes, whole.Length - at);
            yield return new Response { Id = id, Part = UnsafeByteOperations.UnsafeWrap(whole.AsMemory(at, n)), More = at + n < whole.Length };
        }
    }

    /// <summary>Whether <paramref name="datagram"/> is a part of a split reply (rather than a whole reply).</summary>
    public static bool IsPart(Response datagram) => datagram.More || !datagram.Part.IsEmpty;

    /// <summary>
    /// The receiving side: gathers the parts of split replies by id. Not thread-safe (one receive loop owns it).
    /// </summary>
    public sealed class Assembler
    {
        private readonly Dictionary<ulong, Partial> _partial = [];

        /// <summary>Replies begun and not finished.</summary>
        public int Pending => _partial.Count;

        /// <summary>
        /// Takes one received datagram and its descriptors (moved into the assembler). Returns the whole reply when
        /// this datagram completes one — at once for a reply that was not split — with every descriptor of its parts in
        /// <paramref name="fds"/>; null while parts are missing. A reply that cannot be assembled (larger than
        /// <see cref="MaxResponseBytes"/>, or parts that do not parse) comes back as an INTERNAL error reply of its id,
        /// so its caller hears about it.
        /// </summary>
        public Response? Add(Response datagram, List<SafeFd> received, out List<SafeFd> fds)
        {
            ulong id = datagram.Id;
            if (!IsPart(datagram))
            {
                // A whole reply ends any unfinished one of its id (the broker answers an error after a failed part).
                Drop(id);
                fds = [.. received];
                return datagram;
            }

            if (!_partial.TryGetValue(id, out var p))
            {
                p = new Partial();
                _partial[id] = p;
            }

            p.Fds.AddRange(received);
            if (p.Bytes.Length + datagram.Part.Length > MaxResponseBytes)
            {
                Drop(id);
                fds = [];
                return Failed(id, $"the reply is larger than {MaxResponseBytes} bytes");
            }

            datagram.Part.Span.CopyTo(p.Append(datagram.Part.Length));
            if (datagram.More)
            {
                fds = [];
                return null;
            }

            _partial.Remove(id);
            fds = p.Fds;
            Response whole;
            try
            {
                whole = Response.Parser.ParseFrom(p.Bytes.Span);
            }
            catch (InvalidProtocolBufferException e)
            {
                return Failed(id, $"the parts of the reply do not parse: {e.Message}");
            }

            return whole.Id == id && !IsPart(whole) ? whole : Failed(id, "the parts of the reply hold another reply's id or parts again");
        }

        private void Drop(ulong id)
        {
            if (_partial.Remove(id, out var stale))
            {
                foreach (var fd in stale.Fds)
                {
                    fd.Dispose();
                }
            }
        }

        private static Response Failed(ulong id, string why) =>
            new() { Id = id, Error = ErrorCode.Internal, Message = why };

        private sealed class Partial
        {
            private byte[] _buffer = new byte[PartBytes * 2];
            private int _length;

            public List<SafeFd> Fds { get; } = [];

            public ReadOnlyMemory<byte> Bytes => _buffer.AsMemory(0, _length);

            public Span<byte> Append(int n)
            {
                if (_length + n > _buffer.Length)
                {
                    Array.Resize(ref _buffer, (int)Math.Min(Array.MaxLength, Math.Max((long)_buffer.Length * 2, (long)_length + n)));
                }

                var span = _buffer.AsSpan(_length, n);
                _length += n;
                return span;
            }
        }
    }
}
