using System.Buffers;

namespace SharedStore.Native;

/// <summary>A C buffer as <see cref="Memory{T}"/>, for <c>object_aread</c>: the caller keeps it valid until the
/// operation ends (the header says so), so nothing needs pinning.</summary>
internal sealed unsafe class UnmanagedMemory(byte* pointer, int length) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => new(pointer, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
