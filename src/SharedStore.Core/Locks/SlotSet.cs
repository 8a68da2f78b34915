using System.Numerics;
using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>
/// A set of lock slots (0 … <see cref="BlockLockDescriptor.MaxSlots"/> − 1), one bit each: the live members of a
/// container, or what a repair cleared. Not thread-safe; a set handed to a check is not changed while it runs.
/// </summary>
internal sealed class SlotSet
{
    private readonly ulong[] _bits = new ulong[BlockLockDescriptor.MaxLines];

    public SlotSet()
    {
    }

    /// <summary>A set of <paramref name="slots"/>.</summary>
    public SlotSet(IEnumerable<int> slots)
    {
        foreach (int s in slots)
        {
            Add(s);
        }
    }

    /// <summary>False for any slot outside the range (a forged Owner field, say).</summary>
    public bool Contains(int slot) => (uint)slot < BlockLockDescriptor.MaxSlots && (_bits[slot >> 6] & (1UL << slot)) != 0;

    public void Add(int slot) => _bits[slot >> 6] |= 1UL << slot;

    public void Remove(int slot) => _bits[slot >> 6] &= ~(1UL << slot);

    /// <summary>The 64 slots of reader line <paramref name="line"/> as a mask (bit i: slot 64·line + i).</summary>
    public ulong Line(int line) => _bits[line];

    /// <summary>Adds the slots of <paramref name="mask"/> on reader line <paramref name="line"/>.</summary>
    public void AddLine(int line, ulong mask) => _bits[line] |= mask;

    public bool IsEmpty
    {
        get
        {
            foreach (ulong b in _bits)
            {
                if (b != 0)
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>The slots, ascending.</summary>
    public IEnumerable<int> Slots
    {
        get
        {
            for (int line = 0; line < _bits.Length; line++)
            {
                for (ulong m = _bits[line]; m != 0; m &= m - 1)
                {
                    yield return (line << 6) | BitOperations.TrailingZeroCount(m);
                }
            }
        }
    }

    /// <summary>Adds every slot of <paramref name="other"/>.</summary>
    public void UnionWith(SlotSet other)
    {
        for (int i = 0; i < _bits.Length; i++)
        {
            _bits[i] |= other._bits[i];
        }
    }

    public override string ToString() => IsEmpty ? "-" : string.Join(',', Slots);
}
