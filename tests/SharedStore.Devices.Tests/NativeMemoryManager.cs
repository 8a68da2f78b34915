using System.Buffers;

namespace SharedStore.Devices.Tests;

/// <summary>Exposes native memory as <see cref="Memory{T}"/> so aligned buffers can go through the async surface.</summary>
internal sealed unsafe class NativeMemoryManager(nint pointer, int length) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => new((void*)pointer, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new((byte*)pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
