namespace SharedStore.Regions;

/// <summary>
/// Layout of an object's versions, version 1, inside the block lock records of lock segment layouts 2 and 3
/// (<see cref="LockSegmentDescriptor.LayoutVersion"/>): in layout 3, bytes 32–47 of the writer line of each
/// <see cref="BlockLockDescriptor"/> record (layout 2 had them at 88–103).
/// <code>
///  record of block b (every block):                                        record of block 0 only:
///  0       4       8           16    20    24            32                  40                  48         64
///  +-------+-------+-----------+-----+-----+-------------+-------------------+-------------------+----------+
///  | Owner | Flags | Waiting   | Seq | rsvd| ReaderLines | BlockVersion (u64)| VersionWord (u64) | reserved |
///  +-------+-------+-----------+-----+-----+-------------+-------------------+-------------------+----------+
///  VersionWord = (object version &lt;&lt; 1) | SleepersBit; its low 32 bits (offset 40) are the futex word.
/// </code>
/// <list type="bullet">
/// <item><b>VersionWord</b> (record 0): the object's version, 0 for a new object, one more for every completed write
/// (synchronous, asynchronous applied by the broker) and for a durable restore. Bit 0 says "a thread may sleep on this
/// word". Written by writers with a locked add of 2 while they hold the write locks of the blocks they wrote, by
/// waiters with a CAS that sets bit 0, and by wakers with a locked And that clears it.</item>
/// <item><b>BlockVersion</b> (every record): the object version published by the last completed write of the block,
/// or <see cref="Pending"/> while a write of the block is in progress or was torn (its writer died). Written by the
/// block's write-lock holder only.</item>
/// </list>
/// Publication rule: a writer stores <see cref="Pending"/> into the BlockVersion of every block it is about to write,
/// copies the data, then advances VersionWord, then stores the new version into those BlockVersions, and only then
/// releases the blocks' write locks; so a version read from VersionWord never claims data that is not in place, and
/// every block a completed write changed reads a BlockVersion at least that write's version (or Pending).
/// </summary>
internal static class ObjectVersionDescriptor
{
    public const uint LayoutVersion = 1;

    /// <summary>Offset in every block lock record of the block's version.</summary>
    public const int BlockVersionOffset = 32;

    /// <summary>Offset in the object's first block lock record of the version word (8-aligned for the 64-bit locked
    /// add; the futex word is its low half, little-endian).</summary>
    public const int VersionWordOffset = 40;

    /// <summary>Bit 0 of the version word: a waiter may sleep on it; the writer that sees it wakes.</summary>
    public const long SleepersBit = 0x1;

    /// <summary>Added to the version word by each completed write: version + 1, sleepers bit untouched.</summary>
    public const long VersionIncrement = 0x2;

    /// <summary>BlockVersion of a block being written, or torn by a writer that died: counts as changed since any
    /// version.</summary>
    public const long Pending = long.MaxValue;
}
