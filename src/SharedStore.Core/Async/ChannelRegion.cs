using SharedStore.Locks;
using SharedStore.Queues;
using SharedStore.Regions;

namespace SharedStore.Async;

/// <summary>
/// The mapping of this process's channel memfd (layout: <see cref="ChannelDescriptor"/>) and whether the channel may
/// still be used. Shared by the channel's four parts (<see cref="ChannelProducer"/>, <see cref="StagingAllocator"/>,
/// <see cref="OpStatusTable"/>, <see cref="CompletionReaper"/>); it holds no lock of its own.
/// <para><b>Lifetime rules</b> (docs/ARCHITECTURE.md §9.6), which every part follows:</para>
/// <list type="number">
/// <item>A submission writes into the mapping only under the producer's submission lock, and <see cref="MarkGone"/> is
/// called only under that lock: a submission either finishes before the channel is gone or sees it gone and writes
/// nothing.</item>
/// <item>Every other read or write of the mapping (status, cancel, waits, drain, the completion thread) holds a
/// reference on it (<see cref="TryEnter"/> … <see cref="Exit"/>). <see cref="MappedRegion"/> is a SafeHandle: after
/// <see cref="Unmap"/> no new reference is granted, and munmap runs when the last one is released.</item>
/// <item>Gone is final. The channel of a lost broker is <i>retired</i> when its client connects again: gone, but still
/// mapped, so status words stay readable (an operation that completed before the broker died still says Completed)
/// until the client itself goes and unmaps it.</item>
/// </list>
/// </summary>
internal sealed unsafe class ChannelRegion
{
    private readonly MappedRegion _map;
    private readonly LockWaitPolicy _connection;
    private volatile bool _gone;

    private ChannelRegion(MappedRegion map, LockWaitPolicy connection)
    {
        _map = map;
        _connection = connection;
        Header = (ChannelHeader*)map.Pointer;
    }

    /// <summary>The channel header (at offset 0).</summary>
    public ChannelHeader* Header { get; }

    /// <summary>Byte 0 of the mapping.</summary>
    public byte* Pointer => _map.Pointer;

    /// <summary>True once the channel was retired or disposed: for good.</summary>
    public bool IsGone => _gone;

    /// <summary>True once the broker of this channel's connection is gone (the connection's own flag, which its lock
    /// waiters watch too).</summary>
    public bool BrokerLost => _connection.BrokerLost;

    /// <summary>How long a waiter spins before it sleeps (the connection's lock-wait spin).</summary>
    public long SpinTicks => _connection.SpinTicks;

    /// <summary>Maps <paramref name="length"/> bytes of the channel memfd the broker sent and checks that its header
    /// is one this code reads, and that the regions it names lie inside the memfd.</summary>
    /// <exception cref="SharedStoreException">VersionMismatch; Internal (a layout outside the memfd).</exception>
    public static ChannelRegion Map(SafeFd fd, long length, LockWaitPolicy connection)
    {
        var map = MappedRegion.Map(fd, length, writable: true);
        var h = (ChannelHeader*)map.Pointer;
        if (h->Magic != ChannelDescriptor.Magic || h->Version != ChannelDescriptor.LayoutVersion)
        {
            map.Dispose();
            throw new SharedStoreException(ErrorCode.VersionMismatch, $"channel magic {h->Magic:X} version {h->Version}");
        }

        if (h->StagingOffset + h->StagingSize > length || h->StatusOffset + ((long)h->SlotCount * ChannelDescriptor.StatusEntrySize) > length)
        {
            map.Dispose();
            throw new SharedStoreException(ErrorCode.Internal, "channel layout lies outside its memfd");
        }

        return new ChannelRegion(map, connection);
    }

    /// <summary>Builds page-table entries for the header, ring and status entries, which every submission touches.</summary>
    public void PopulateHot() => _map.Populate(0, Header->StagingOffset);

    /// <summary>Marks the channel gone. Only under the producer's submission lock (rule 1).</summary>
    public void MarkGone() => _gone = true;

    /// <summary>Takes a reference on the mapping (rule 2); false once it was unmapped. Pair with <see cref="Exit"/>.</summary>
    public bool TryEnter()
    {
        bool added = false;
        try
        {
            _map.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }

        return added;
    }

    /// <summary>Releases a reference taken by <see cref="TryEnter"/> (the last one after <see cref="Unmap"/> unmaps).</summary>
    public void Exit() => _map.DangerousRelease();

    /// <summary>Throws when nothing may be submitted: BrokerUnavailable for a lost broker first (the channel of a lost
    /// broker is retired too when its client reconnects, and the caller must learn why), else ObjectDisposedException
    /// for a gone channel.</summary>
    public void ThrowIfUnusable()
    {
        if (BrokerLost)
        {
            ThrowHelper.BrokerLost();
        }

        ObjectDisposedException.ThrowIf(_gone, typeof(AsyncChannel));
    }

    /// <summary>Unmaps (once the last reference is released). Only after the channel is gone.</summary>
    public void Unmap() => _map.Dispose();
}
