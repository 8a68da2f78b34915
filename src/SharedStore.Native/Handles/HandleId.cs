namespace SharedStore.Native.Handles;

/// <summary>
/// The layout of the <c>int</c> ids the C interface hands out (containers, objects, operations):
/// <code>
///  31  30            18 17                 0
/// +---+----------------+-------------------+
/// | 0 |  generation    |    table index    |
/// +---+----------------+-------------------+
/// </code>
/// Bit 31 is always clear, so an id is never negative and never equal to an error. The generation is bumped each time
/// a table slot is freed, so an id used after its release (a second <c>object_put</c>, a stale object id) is refused
/// with NotFound instead of naming whatever took the slot next — unless the slot was reused a multiple of 8192 times
/// in between.
/// </summary>
internal static class HandleId
{
    /// <summary>Index bits: at most 262 144 (1 &lt;&lt; 18) live entries per table.</summary>
    public const int IndexBits = 18;

    /// <summary>Entries per table.</summary>
    public const int Capacity = 1 << IndexBits;

    /// <summary>Generations wrap at 8192 (1 &lt;&lt; 13): 18 + 13 = 31 bits.</summary>
    public const int GenerationMask = (1 << 13) - 1;

    /// <summary>Entries per lazily allocated chunk of a table (1 &lt;&lt; 10 = 1024), so lookups never see an array
    /// being replaced: chunks are published once and never move.</summary>
    public const int ChunkBits = 10;

    public const int ChunkSize = 1 << ChunkBits;

    public const int ChunkCount = Capacity / ChunkSize;

    public static int Make(int index, int generation) => (generation << IndexBits) | index;

    public static int Index(int id) => id & (Capacity - 1);

    public static int NextGeneration(int generation) => (generation + 1) & GenerationMask;
}
