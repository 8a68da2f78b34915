using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>
/// The record a process keeps of what its threads hold with one lock slot on one object's blocks, for a slot whose
/// words the repair cannot trust by the liveness of a member: the broker's own slot 63 (its implementation is the
/// broker's <c>BrokerSlotLedger</c>, whose comment argues the record). An <see cref="ObjectView"/> with a ledger takes
/// every single-block lock through it, so each hold is recorded in the same critical sections that take and release
/// it; a view without one (a member's slot) calls <see cref="BlockLock"/> with its own waiter counts.
/// </summary>
internal unsafe interface ISlotLedger
{
    /// <summary>Takes one read hold of <paramref name="block"/> (record <paramref name="rec"/>), waiting as long as
    /// <paramref name="wait"/> allows; on any outcome but Acquired nothing is held or recorded.</summary>
    LockStatus AcquireRead(BlockLockRecord* rec, long block, ref LockWait wait);

    /// <summary>Takes one read hold if that needs no wait; false (nothing held or recorded) otherwise.</summary>
    bool TryAcquireReadFast(BlockLockRecord* rec, long block);

    /// <summary>Releases a read taken with <see cref="AcquireRead"/> or <see cref="TryAcquireReadFast"/>.</summary>
    void ReleaseRead(BlockLockRecord* rec, long block);

    /// <summary>Takes the block for writing; on any outcome but Acquired nothing is held or recorded.</summary>
    LockStatus AcquireWrite(BlockLockRecord* rec, long block, ref LockWait wait);

    /// <summary>Releases a write taken with <see cref="AcquireWrite"/> (<see cref="BlockLock.ReleaseWrite(BlockLockRecord*, bool, bool)"/>'s
    /// flags).</summary>
    void ReleaseWrite(BlockLockRecord* rec, long block, bool wroteWholeBlock, bool markDirty);
}
