using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Segment descriptors granted to a client with one reply: the data fd (read-only twin for members that may
/// not write) then the lock fd per segment, each referenced until <see cref="Release"/>.</summary>
internal sealed class SegmentGrant
{
    private readonly List<SafeFd> _refs = [];

    public List<SegmentInfo> Segments { get; } = [];

    public int[] Fds => _refs.Select(f => f.Fd).ToArray();

    /// <summary>Under the model lock: adds <paramref name="seg"/>'s descriptors as <paramref name="m"/> may use them,
    /// with a reference taken on each (a concurrent destroy may dispose the segment before the reply is sent, and a
    /// descriptor must not be closed, and its number reused, until then).</summary>
    public void Add(Membership m, Segment seg)
    {
        Segments.Add(new SegmentInfo { SegmentId = seg.Id, DataLength = (ulong)seg.DataCapacity, LockLength = (ulong)seg.LockLength, ReadOnly = !m.CanWrite });
        AddRef(m.CanWrite ? seg.DataFd : seg.DataReadOnlyFd);
        AddRef(seg.LockFd);
    }

    public void AddRef(SafeFd fd)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        _refs.Add(fd);
    }

    public void Release()
    {
        foreach (var fd in _refs)
        {
            fd.DangerousRelease();
        }

        _refs.Clear();
    }
}
