using SharedStore.Async;

namespace SharedStore;

/// <summary>
/// A buffer rented from this client's staging area in shared memory (<see cref="SharedStoreClient.RentBuffer"/>).
/// Fill <see cref="Span"/> and pass the buffer to <see cref="SharedObject.AWrite(long, SharedBuffer, int)"/>: the
/// broker copies straight from it into the object, with no staging copy. The buffer then belongs to the operation
/// and is freed when it completes; dispose a buffer you do not submit. Not thread-safe.
/// </summary>
public sealed unsafe class SharedBuffer : IDisposable
{
    private readonly StagingAllocator _staging;
    private readonly byte* _pointer;
    private StagingRange? _range;

    internal SharedBuffer(StagingAllocator staging, StagingRange range, byte* pointer, int length)
    {
        _staging = staging;
        _range = range;
        _pointer = pointer;
        Length = length;
    }

    /// <summary>Bytes rented.</summary>
    public int Length { get; }

    /// <summary>Whether the buffer can still be written and submitted (not submitted or disposed yet).</summary>
    public bool IsAvailable => _range is not null;

    /// <summary>The rented memory.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was submitted or disposed.</exception>
    public Span<byte> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(_range is null, this);
            return new Span<byte>(_pointer, Length);
        }
    }

    internal StagingRange TakeRange(StagingAllocator staging)
    {
        if (!ReferenceEquals(staging, _staging))
        {
            throw new ArgumentException("the buffer was rented from another client", "buffer");
        }

        StagingRange r = _range ?? throw new ObjectDisposedException(nameof(SharedBuffer), "the buffer was already submitted or disposed");
        _range = null;
        return r;
    }

    internal void Restore(StagingRange r) => _range = r;

    /// <summary>Returns an unsubmitted buffer to the staging area (a submitted one belongs to its operation).</summary>
    public void Dispose()
    {
        if (_range is { } r)
        {
            _range = null;
            StagingAllocator.Free(r);
        }
    }
}
