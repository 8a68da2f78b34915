using SharedStore.Devices;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>One durable object: the file device behind its shared memory, and per block which shadow slot holds the
/// newest valid copy (and its generation). Write-back and removal serialize on <see cref="Gate"/> (<see cref="LockLevel.DurableObject"/>).
/// <see cref="State"/> is read (name, size, ledger), never written: the model is the registry's. Its view (the
/// broker's slot) keeps the memory mapped until <see cref="Close"/>, as write-back's writes read it asynchronously.</summary>
internal sealed unsafe class DurableObject(ObjectState state, string fileName, RandomAccessFileDevice device, ObjectView view)
{
    public const byte NoSlot = 255;

    public ObjectState State { get; } = state;

    /// <summary>The file's name in its container's folder (relative to <see cref="DurableContainer.Folder"/>).</summary>
    public string FileName { get; } = fileName;

    public RandomAccessFileDevice Device { get; } = device;

    /// <summary>The object's memory and lock records, locked with the broker's slot (through its ledger).</summary>
    public ObjectView View { get; } = view;

    public byte* Data => View.Data;

    public int BlockSize { get; } = 1 << view.BlockShift;

    public long Size => State.Size;

    public long BlockCount => State.BlockCount;

    public long[] Generation { get; } = new long[state.BlockCount];

    public byte[] Slot { get; } = Enumerable.Repeat(NoSlot, (int)state.BlockCount).ToArray();

    public object Gate { get; } = new();

    public bool Closed { get; private set; }

    /// <summary>Waits for a write-back pass that holds the object (its <see cref="Gate"/>) to finish, marks it closed so
    /// no later pass touches it, and closes its file.</summary>
    public void Close()
    {
        using (LockOrder.Enter(Gate, LockLevel.DurableObject))
        {
            Closed = true;
        }

        Device.Dispose();
        View.Dispose();
    }

    public int BlockLength(long b) => (int)Math.Min(BlockSize, Size - (b * BlockSize));
}
