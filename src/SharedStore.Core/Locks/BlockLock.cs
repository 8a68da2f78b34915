using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using SharedStore.Regions;

namespace SharedStore.Locks;

/// <summary>How a lock wait ended.</summary>
internal enum LockStatus
{
    Acquired = 0,
    Timeout,
    Canceled,
    BrokerLost,
}

/// <summary>
/// Cross-process, writer-priority reader/writer lock over one <see cref="BlockLockRecord"/> in shared memory.
/// <para><b>Algorithm.</b> A per-slot counting reader/writer lock with a Dekker-style announcement between the two
/// sides, a futex sequence word for sleeping, and ownership that is recorded by the atomic operation itself.</para>
/// <para><b>Layout 3</b> (<see cref="BlockLockDescriptor"/>): slot s's byte (count in bits 0-6, wait flag in bit 7) is
/// on reader line g = s / 64; <c>L</c> = ReaderLines (bit g: line g may hold reads; set by a reader before its first
/// hold, never cleared while the record is in use); <c>W</c> = Waiting is one bit per line (some slot of the line may
/// wait; the slot's flag says which). Below, "R" means the counts of the lines L names, and "W ≠ 0" reads the line
/// bits. The arguments that a writer may skip the lines L does not name, and that the shared W bit loses no waiter,
/// are in docs/ARCHITECTURE.md §4 and at <see cref="AnyReaders"/> and <see cref="RefreshWaiting"/>.</para>
/// <para><b>States</b> of a record (slot <c>s</c> is a container member process; <c>R</c> = all read counts,
/// <c>O</c> = Owner, <c>W</c> = Waiting):</para>
/// <code>
///   free            R = 0, O = 0
///   read-held       R ≠ 0, O = 0 or O pending (re-entrant readers only)
///   write-pending   O = s+1         writer s owns the block and waits for R to drain
///   write-held      O = (s+1)|Active, R = 0
/// </code>
/// <para><b>Reader of slot s</b> (steps; every RMW is a locked instruction, i.e. sequentially consistent):</para>
/// <list type="number">
/// <item>Read its byte b. If b = 0 and (O ≠ 0 or W ≠ 0), a writer owns or waits: sleep until O = 0 and W = 0
/// (writer priority). If b &gt; 0 the process already holds a read and goes on even past a waiting writer
/// (re-entry must not deadlock behind a writer that waits for this very read).</item>
/// <item>Set its line's bit in L unless a load finds it set (before every increment: docs/MODEL.md F5). Then CAS its byte b → b+1 on the readers word
/// (fails and retries if any byte of the word changed).</item>
/// <item>If b was 0, re-read O and W. If either is set, a writer announced itself between 1 and 2: undo 2 and
/// go back to 1. If b was above 0, re-read O: if it is active, undo 2 and wait for it to clear (b may have been another
/// thread's tentative 0→1, about to be undone, rather than a hold). With writer steps 1 and 3 these are Dekker
/// handshakes: each side writes its own word with a locked RMW and then reads the other's, so one sees the other.</item>
/// </list>
/// <para><b>Writer of slot s:</b></para>
/// <list type="number">
/// <item>CAS O: 0 → s+1. If it fails, set the slot's wait flag, then its line's bit of W (first waiting thread of the
/// process), sleep until O = 0, retry; once O is ours the last waiting thread of the process clears its flag and
/// refreshes the line's bit (<see cref="RefreshWaiting"/>).</item>
/// <item>Read all reader words; sleep until they are all 0. New readers that do not already hold the block see
/// O ≠ 0 and back off (reader step 3), so the drain terminates once present holders put.</item>
/// <item>Set Active in O with a locked RMW, then re-read the reader words: if any is non-zero (a reader incremented
/// after step 2), clear Active and go back to step 2. Then write the data; store O = 0.</item>
/// </list>
/// <para><b>Sleeping without lost wake-ups.</b> A sleeper sets bit 0 of Seq with a CAS (or fences if it is already
/// set), re-checks its condition, then FUTEX_WAITs on the value it saw. Every state change that can unblock someone
/// is a locked RMW followed by a read of Seq; if bit 0 is set it bumps Seq and FUTEX_WAKEs everyone. In the total
/// order of locked instructions either the releaser's change precedes the sleeper's Seq RMW (then the sleeper's
/// re-check sees it and does not sleep) or it follows (then the releaser sees bit 0 and bumps Seq, so the sleeper's
/// FUTEX_WAIT either returns EAGAIN or is woken). Waiters spin for <see cref="LockWaitPolicy.SpinTicks"/> first:
/// on this machine a futex wake of a halted vCPU costs ~22 µs while a spinning peer sees a store in ~0.05 µs.</para>
/// <para><b>Crash safety.</b> Every shared fact is attributed to a slot by the word that carries it: a read is slot
/// s's count, a write is O = s+1, a waiting writer is slot s's wait flag. So there is no window between an atomic update and
/// separate bookkeeping, and the broker's recovery (<see cref="ScrubSlot"/>) needs no log: it clears byte s, O if it
/// names s (marking the block torn if O was active), and refreshes its line's W bit, then wakes sleepers. A dead sleeper leaves at
/// most bit 0 of Seq set, which costs one spurious wake.</para>
/// <para><b>Repair of forged state</b> (<see cref="ClearUnowned"/>). Every member maps the records read-write, so a
/// member can write any word, e.g. name a slot nobody holds in O: every later writer and reader of the block would
/// wait forever. The broker therefore clears, from a record, everything attributed to a slot that has no live member:
/// read counts (lowered to 0), an O whose slot field names no member (or no slot at all), wait flags (then W bits of lines
/// where no flag is left). It does so for every
/// record of a container when a member leaves or dies, and for one record when a waiter that has waited
/// <see cref="LockWaitPolicy.RepairAfterTicks"/> (250 ms) asks (<see cref="ILockRepairRequester"/>, the wire's
/// lock_check). The broker's own slot (the last of the record, 63 for one line) has no member; for it the broker's ledger of what its threads really hold
/// stands in (the broker's BrokerSlotLedger: reads counted before their CAS, the O claim and release made under the
/// ledger's gate with an owned flag in the same critical section, its wait flag set and cleared under that gate with the
/// process-local waiter count).</para>
/// <para><i>Why this cannot break mutual exclusion among live members.</i> Exclusion is the two Dekker handshakes
/// above, and each is between words a live member wrote itself: its own byte, and O holding its own slot. The repair
/// changes only words attributed to slots outside the live set, with a CAS (and a W bit only by <see cref="RefreshWaiting"/>, which puts back any bit whose line has a flag)
/// from the value it judged, so no live member's byte, W bit or O is ever altered: a live member's concurrent change of
/// its own byte in the same word fails the CAS and the word is judged again, and if O changed after it was read (even
/// back to the same memberless value and then to a live writer's slot) the CAS from the judged value fails unless the
/// word still holds exactly that memberless value, which no live member writes. Lowering a memberless byte can only let
/// a writer drain sooner, never past a live reader (those bytes are untouched); clearing a memberless O can only let a
/// live writer's CAS 0 → s+1 succeed, and no live process believes it holds that O; clearing a memberless W bit only
/// lets new readers in (writer priority, not exclusion). For slot 63 the same holds because the ledger's gate makes the
/// judgement and the broker's own claims mutually exclusive: while it is held no broker thread can raise its read
/// count, claim O or change its wait flag, so what is cleared is held by no broker thread (a broker read's tentative
/// increment is already counted, so the byte is never lowered below it).</para>
/// <para><i>Races with a slot being reassigned.</i> Slots are given to members under the broker's state lock, and the
/// whole judgement runs under it, so the set of live slots cannot change while a record is judged: a member that joins
/// afterwards starts from a record in which its slot is clean: before a free slot is given to a member, the broker
/// clears that slot's words in every record of the container (a ClearUnowned with every other slot trusted), so a
/// forgery made while the slot was free is never inherited as the new member's own, unrepairable, hold. A slot whose
/// member left is memberless from that moment; a word its former process writes later, through a mapping it kept, is
/// a forgery like any other. A thread still inside a lock call while its process leaves the container (misuse: leave
/// must not race with calls on the same handle) may lose its hold to the repair, as it always could to the leave's own
/// scrub.</para>
/// <para><i>What it cannot repair.</i> A word naming a live member's slot (the forger's own, or another member's) is
/// indistinguishable from that member's real hold and stays until the member leaves or dies; an O with junk bits but a
/// live slot field likewise. A forger that rewrites a word in a loop re-wedges the block after every repair (each
/// waiter still asks every 250 ms, so it gets in only when it wins a race). A forger that overwrites a live member's
/// word (lowers its byte, replaces its O) breaks exclusion for that member by itself: writing 0 does it without any
/// repair, so the repair gives a forger nothing it did not have. Flags and Seq are not repaired: a forged Torn or Dirty
/// mark misleads readers and write-back but blocks no one, and a forged Seq costs sleepers at most one 50 ms slice
/// per hand-off.</para>
/// </summary>
internal static unsafe class BlockLock
{
    // ---- Readers ------------------------------------------------------------------------------------------

    /// <summary>The 64-bit word holding slot <paramref name="slot"/>'s byte: word <c>slot / 8</c> of the reader lines,
    /// which follow the writer line back to back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong* ReaderWord(BlockLockRecord* rec, int slot) => (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset) + (slot >> 3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReaderShift(int slot) => (slot & 7) << 3;

    /// <summary>Bit of <paramref name="slot"/>'s reader line in ReaderLines and Waiting.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong LineBit(int slot) => 1UL << (slot >> 6);

    /// <summary>The number of reads <paramref name="slot"/> holds on the block.</summary>
    public static int ReadHolds(BlockLockRecord* rec, int slot) =>
        (int)((Volatile.Read(ref *ReaderWord(rec, slot)) >> ReaderShift(slot)) & BlockLockDescriptor.MaxHoldsPerSlot);

    /// <summary>Reader step 0: before every increment of a slot's count, its line's ReaderLines bit, so a writer that
    /// reads ReaderLines after our increment looks at our line. Every increment, not only a slot's first hold: a count
    /// above 0 may be forged (the broker slot has no member to vouch for its byte) on a line nobody announced (spin
    /// model F5). The bit is never cleared while the record is in use, so a
    /// plain load that finds it set suffices (it was set by a locked OR that precedes the load).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AnnounceLine(BlockLockRecord* rec, int slot)
    {
        ulong bit = LineBit(slot);
        if ((Volatile.Read(ref rec->ReaderLines) & bit) == 0)
        {
            Interlocked.Or(ref rec->ReaderLines, bit);
        }
    }

    /// <summary>Reader steps 1–3 once, without waiting: false if a writer is present, the CAS met contention, or the
    /// slot's count is saturated (the caller then takes <see cref="AcquireRead"/>). The uncontended get path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryAcquireReadFast(BlockLockRecord* rec, int slot)
    {
        ulong* word = ReaderWord(rec, slot);
        int shift = ReaderShift(slot);
        ulong old = Volatile.Read(ref *word);
        uint mine = (uint)(old >> shift) & BlockLockDescriptor.MaxHoldsPerSlot;
        if (mine == 0 ? WriterPresent(rec) : (mine == BlockLockDescriptor.MaxHoldsPerSlot || WriterActive(rec)))
        {
            return false;
        }

        AnnounceLine(rec, slot); // before every increment, not only a first hold: spin model F5

        if (Interlocked.CompareExchange(ref *word, old + (1UL << shift), old) != old)
        {
            return false;
        }

        if (mine == 0 ? WriterPresent(rec) : WriterActive(rec))
        {
            ReleaseRead(rec, slot); // Dekker re-check (step 3): a writer came in between
            return false;
        }

        return true;
    }

    /// <summary>Takes one read hold for <paramref name="slot"/>: reader steps 1–3 of the class comment.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LockStatus AcquireRead(BlockLockRecord* rec, int slot, ref LockWait wait)
    {
        ulong* word = ReaderWord(rec, slot);
        int shift = ReaderShift(slot);
        ulong unit = 1UL << shift;
        while (true)
        {
            ulong old = Volatile.Read(ref *word);
            uint mine = (uint)(old >> shift) & BlockLockDescriptor.MaxHoldsPerSlot;
            if (mine == 0 ? WriterPresent(rec) : (mine == BlockLockDescriptor.MaxHoldsPerSlot || WriterActive(rec)))
            {
                LockStatus s = wait.WaitFor(rec, &ReaderMayEnter, slot);
                if (s != LockStatus.Acquired)
                {
                    return s;
                }

                continue;
            }

            // Step 0, before every increment: a count above 0 need not be this process's own (the broker slot has no
            // member, and a member can forge its byte on a line nobody announced); trusting it to mean "announced"
            // let the broker's write-back read under a member's active write (spin model F5). A plain load of the
            // line the caller has just read for Owner; the OR runs once per line per record.
            AnnounceLine(rec, slot);

            // Step 2. The CAS also orders step 3's loads after it (a locked instruction is a full fence).
            if (Interlocked.CompareExchange(ref *word, old + unit, old) != old)
            {
                continue;
            }

            // Step 3: Dekker re-check against a writer that announced itself after step 1. A re-entrant increment
            // re-checks too, against an *active* writer only: the byte it saw may have been another thread's
            // tentative 0→1 (between its CAS and its back-out), not a hold, and then nothing stops a writer that
            // drained before that CAS (found by the spin model, docs/MODEL.md F1).
            if (mine == 0 ? WriterPresent(rec) : WriterActive(rec))
            {
                ReleaseRead(rec, slot);
                continue;
            }

            return LockStatus.Acquired;
        }
    }

    /// <summary>Drops one read hold of <paramref name="slot"/> and wakes sleepers if there are any.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReleaseRead(BlockLockRecord* rec, int slot)
    {
        ulong* word = ReaderWord(rec, slot);
        int shift = ReaderShift(slot);
        ulong unit = 1UL << shift;
        while (true)
        {
            // CAS rather than a blind subtract: a count that is already 0 (a misuse race) must not borrow from the
            // neighbouring slot's byte. The locked RMW also orders our read of Seq after the release (no lost wake-up).
            ulong old = Volatile.Read(ref *word);
            if (((old >> shift) & BlockLockDescriptor.MaxHoldsPerSlot) == 0)
            {
                Debug.Fail("release of a read the slot does not hold");
                return;
            }

            if (Interlocked.CompareExchange(ref *word, old - unit, old) == old)
            {
                break;
            }
        }

        WakeIfSleepers(rec);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WriterPresent(BlockLockRecord* rec) =>
        (Volatile.Read(ref rec->Owner) | Volatile.Read(ref rec->Waiting)) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WriterActive(BlockLockRecord* rec) =>
        (Volatile.Read(ref rec->Owner) & BlockLockDescriptor.OwnerActiveBit) != 0;

    private static bool ReaderMayEnter(BlockLockRecord* rec, int slot)
    {
        uint mine = (uint)ReadHolds(rec, slot);
        return mine == 0 ? !WriterPresent(rec) : mine < BlockLockDescriptor.MaxHoldsPerSlot && !WriterActive(rec);
    }

    // ---- Writers ------------------------------------------------------------------------------------------

    /// <summary>Whether any slot holds a read on the block: the counts of every reader line that ReaderLines names,
    /// each word read once (a reader that increments after its word was read either is a tentative 0→1 that sees the
    /// writer in its step 3, or was seen by an earlier look: the drain and the active re-check each read after the
    /// locked RMW that announced them, see the class comment).</summary>
    public static bool AnyReaders(BlockLockRecord* rec)
    {
        ulong lines = Volatile.Read(ref rec->ReaderLines);
        byte* r = (byte*)rec + BlockLockDescriptor.ReadersOffset;
        if (Vector256.IsHardwareAccelerated)
        {
            // One OR over every announced line and one test at the end: no branch or reduction per line (a writer
            // of a record whose 17 lines were all used once reads 34 vectors).
            Vector256<ulong> acc = Vector256<ulong>.Zero;
            for (; lines != 0; lines &= lines - 1)
            {
                byte* line = r + (BitOperations.TrailingZeroCount(lines) * BlockLockDescriptor.ReaderLineSize);
                acc |= Vector256.Load((ulong*)line) | Vector256.Load((ulong*)(line + 32));
            }

            return (acc & Vector256.Create(BlockLockDescriptor.CountsMask)) != Vector256<ulong>.Zero;
        }

        for (; lines != 0; lines &= lines - 1)
        {
            if ((LineOr(r + (BitOperations.TrailingZeroCount(lines) * BlockLockDescriptor.ReaderLineSize)) & BlockLockDescriptor.CountsMask) != 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The OR of a reader line's eight words, read with two 32-byte loads. Each 8-byte word of a load is
    /// read whole (an aligned vector load does not tear its 8-byte lanes on x86-64), and the loads cannot move before
    /// the caller's locked RMW (a full fence, also for the JIT), which is all the drain argument needs of them:
    /// every word is read after the writer's announcement (class comment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong LineOr(byte* line)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<ulong> v = Vector256.Load((ulong*)line) | Vector256.Load((ulong*)(line + 32));
            return v.GetElement(0) | v.GetElement(1) | v.GetElement(2) | v.GetElement(3);
        }

        ulong* w = (ulong*)line;
        ulong any = 0;
        for (int i = 0; i < BlockLockDescriptor.WordsPerLine; i++)
        {
            any |= Volatile.Read(ref w[i]);
        }

        return any;
    }

    /// <summary>
    /// Takes the block for writing: writer steps 1–3. <paramref name="waitGate"/> serializes the process-local
    /// count of this process's threads waiting on the block (<paramref name="localWaiters"/>), which decides when the
    /// slot's Waiting bit is set and cleared. On any outcome but Acquired nothing is held.
    /// </summary>
    public static LockStatus AcquireWrite(BlockLockRecord* rec, int slot, object waitGate, ref int localWaiters, ref LockWait wait) =>
        AcquireWrite(rec, slot, waitGate, ref localWaiters, ref wait, ref Unsafe.NullRef<int>());

    /// <summary>
    /// <see cref="AcquireWrite(BlockLockRecord*, int, object, ref int, ref LockWait)"/> for the broker's own slot: every
    /// ownership CAS runs under <paramref name="waitGate"/> and, when it succeeds, sets <paramref name="owned"/> to 1
    /// in the same critical section, so a repair that holds the gate knows whether an Owner word naming the slot is
    /// really held (see "Repair" in the class comment). The caller clears <paramref name="owned"/> after the release
    /// (or after this returns anything but Acquired). A null reference: no record (members' slots).
    /// </summary>
    public static LockStatus AcquireWrite(BlockLockRecord* rec, int slot, object waitGate, ref int localWaiters, ref LockWait wait, ref int owned)
    {
        uint me = (uint)slot + 1;

        // Step 1, fast path: uncontended ownership is one CAS.
        if (!TryClaimOwner(rec, me, waitGate, ref owned))
        {
            LockStatus s = WaitForOwnership(rec, slot, me, waitGate, ref localWaiters, ref wait, ref owned);
            if (s != LockStatus.Acquired)
            {
                return s;
            }
        }

        // Step 2: the owner CAS above was a full fence, so these loads cannot pass it (Dekker, writer half).
        // Step 3: go active with a locked RMW and look at the readers once more. A reader that incremented after our
        // drain check (a re-entrant one, or a tentative 0→1 another thread of its process will back out) either sees
        // the active bit in its own re-check or is seen here; if seen, step back to pending and drain again.
        while (true)
        {
            if (AnyReaders(rec))
            {
                LockStatus s = wait.WaitFor(rec, &NoReaders, slot);
                if (s != LockStatus.Acquired)
                {
                    DropOwner(rec, waitGate, ref owned);
                    WakeIfSleepers(rec);
                    return s;
                }
            }

            Interlocked.Or(ref rec->Owner, BlockLockDescriptor.OwnerActiveBit);
            if (!AnyReaders(rec))
            {
                return LockStatus.Acquired;
            }

            Interlocked.And(ref rec->Owner, ~BlockLockDescriptor.OwnerActiveBit);
            WakeIfSleepers(rec); // re-entrant readers that saw the active bit wait for it to clear
        }
    }

    /// <summary>The Owner CAS 0 → <paramref name="me"/>; recorded in <paramref name="owned"/> under the gate when the
    /// caller keeps such a record (the broker's slot).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryClaimOwner(BlockLockRecord* rec, uint me, object waitGate, ref int owned)
    {
        if (Unsafe.IsNullRef(ref owned))
        {
            return Interlocked.CompareExchange(ref rec->Owner, me, 0) == 0;
        }

        lock (waitGate)
        {
            if (Interlocked.CompareExchange(ref rec->Owner, me, 0) != 0)
            {
                return false;
            }

            owned = 1;
            return true;
        }
    }

    private static LockStatus WaitForOwnership(BlockLockRecord* rec, int slot, uint me, object waitGate, ref int localWaiters, ref LockWait wait, ref int owned)
    {
        lock (waitGate)
        {
            if (localWaiters++ == 0)
            {
                // The slot's flag first, then the line's Waiting bit with a locked RMW: readers that CAS after this
                // see W ≠ 0 in their step 3; a refresh that clears the bit finds the flag and sets it again.
                SetWaitFlag(rec, slot, true);
                Interlocked.Or(ref rec->Waiting, LineBit(slot));
            }
        }

        try
        {
            while (!TryClaimOwner(rec, me, waitGate, ref owned))
            {
                LockStatus s = wait.WaitFor(rec, &OwnerFree, slot);
                if (s != LockStatus.Acquired)
                {
                    return s;
                }
            }

            return LockStatus.Acquired;
        }
        finally
        {
            bool cleared = false;
            lock (waitGate)
            {
                if (--localWaiters == 0)
                {
                    // Clear only after Owner is ours (or we gave up): readers never see a gap between the two.
                    SetWaitFlag(rec, slot, false);
                    RefreshWaiting(rec, slot >> 6);
                    cleared = true;
                }
            }

            if (cleared)
            {
                WakeIfSleepers(rec);
            }
        }
    }

    /// <summary>Sets or clears bit 7 of the slot's byte (CAS on its word: the neighbours' bytes are theirs).</summary>
    private static void SetWaitFlag(BlockLockRecord* rec, int slot, bool on)
    {
        ulong* word = ReaderWord(rec, slot);
        ulong flag = (ulong)BlockLockDescriptor.SlotWaitFlag << ReaderShift(slot);
        while (true)
        {
            ulong old = Volatile.Read(ref *word);
            ulong next = on ? old | flag : old & ~flag;
            if (next == old || Interlocked.CompareExchange(ref *word, next, old) == old)
            {
                return;
            }
        }
    }

    /// <summary>Whether any slot of reader line <paramref name="line"/> has its wait flag set.</summary>
    private static bool LineHasWaiters(BlockLockRecord* rec, int line) =>
        (LineOr((byte*)rec + BlockLockDescriptor.ReadersOffset + (line * BlockLockDescriptor.ReaderLineSize)) & BlockLockDescriptor.WaitFlagsMask) != 0;

    /// <summary>
    /// Brings line <paramref name="line"/>'s Waiting bit in agreement with the line's wait flags: run after a slot
    /// cleared its own flag, and by recovery and repair. Idempotent; any thread may run it at any time.
    /// <para><i>The loop.</i> Each round reads the bit and the line's flags: equal (bit set and a flag, or neither),
    /// done; a flag and no bit, OR the bit; a bit and no flag, And it off; then look again. A single pass (And, look,
    /// OR back) can leave a stale bit: refresher A Ands, sees B's flag, and before A's OR lands B stops waiting,
    /// clears its flag and runs its own refresh, which sees the bit clear and returns; A's OR comes last and keeps new
    /// readers out with no writer waiting (spin model F4). Looping until the two agree makes whoever changed the bit
    /// last check it against the flags. The OR of a clear bit with a flag set also puts back a bit that a refresher
    /// killed between its And and its OR lost for a line-mate still waiting (F4b).</para>
    /// <para><i>Why no waiter is left unannounced:</i> a waiter sets its flag before its OR of the bit. An And of
    /// this loop is followed by another look at the flags, so a waiter whose OR preceded the And (its flag too) is seen
    /// and the bit put back; a waiter whose OR follows the And sets the bit itself. Between an And and the OR-back the
    /// bit may be clear while a slot waits: readers can slip in there, which costs writer priority for that moment (like
    /// the hand-off gap of docs/MODEL.md F3), never exclusion. It ends: each round either returns or changes the bit
    /// towards what the flags say, and the flags change only when writers start or stop waiting.</para>
    /// </summary>
    internal static void RefreshWaiting(BlockLockRecord* rec, int line)
    {
        ulong bit = 1UL << line;
        while (true)
        {
            bool set = (Volatile.Read(ref rec->Waiting) & bit) != 0;
            bool waiters = LineHasWaiters(rec, line);
            if (set == waiters)
            {
                return;
            }

            if (waiters)
            {
                Interlocked.Or(ref rec->Waiting, bit);
            }
            else
            {
                Interlocked.And(ref rec->Waiting, ~bit);
            }
        }
    }

    /// <summary>Releases a write. <paramref name="wroteWholeBlock"/> clears the torn mark first;
    /// <paramref name="markDirty"/> (durable containers) records the change for write-back while the write is still
    /// held, so a write-back that read-locks the block afterwards sees it.</summary>
    public static void ReleaseWrite(BlockLockRecord* rec, bool wroteWholeBlock, bool markDirty = false) =>
        ReleaseWrite(rec, wroteWholeBlock, markDirty, null!, ref Unsafe.NullRef<int>());

    /// <summary>Releases a write taken with the recorded <see cref="AcquireWrite(BlockLockRecord*, int, object, ref int, ref LockWait, ref int)"/>:
    /// the Owner store and the reset of <paramref name="owned"/> are one critical section under
    /// <paramref name="waitGate"/>, so another thread of the same slot can never claim the block between them and then
    /// be recorded as not owning it.</summary>
    public static void ReleaseWrite(BlockLockRecord* rec, bool wroteWholeBlock, bool markDirty, object waitGate, ref int owned)
    {
        if (markDirty)
        {
            Interlocked.Or(ref rec->Flags, BlockLockDescriptor.FlagDirty);
        }

        if (wroteWholeBlock && (Volatile.Read(ref rec->Flags) & BlockLockDescriptor.FlagTorn) != 0)
        {
            Interlocked.And(ref rec->Flags, ~BlockLockDescriptor.FlagTorn);
        }

        // Locked RMW before reading Seq (no lost wake-up).
        DropOwner(rec, waitGate, ref owned);
        WakeIfSleepers(rec);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DropOwner(BlockLockRecord* rec, object waitGate, ref int owned)
    {
        if (Unsafe.IsNullRef(ref owned))
        {
            Interlocked.Exchange(ref rec->Owner, 0);
            return;
        }

        lock (waitGate)
        {
            Interlocked.Exchange(ref rec->Owner, 0);
            owned = 0;
        }
    }

    /// <summary>Marks the block torn (its writer stopped mid-write); only a whole-block write clears it. Call while
    /// holding the write.</summary>
    public static void MarkTorn(BlockLockRecord* rec) => Interlocked.Or(ref rec->Flags, BlockLockDescriptor.FlagTorn | BlockLockDescriptor.FlagDirty);

    /// <summary>Write-back, under a read hold: true (and the mark cleared) when the block changed since the last one.</summary>
    public static bool TakeDirty(BlockLockRecord* rec) =>
        (Volatile.Read(ref rec->Flags) & BlockLockDescriptor.FlagDirty) != 0
        && (Interlocked.And(ref rec->Flags, ~BlockLockDescriptor.FlagDirty) & BlockLockDescriptor.FlagDirty) != 0;

    public static bool IsDirty(BlockLockRecord* rec) => (Volatile.Read(ref rec->Flags) & BlockLockDescriptor.FlagDirty) != 0;

    /// <summary>Marks the block changed since its last write-back (a write-back that failed puts the mark back).</summary>
    public static void MarkDirty(BlockLockRecord* rec) => Interlocked.Or(ref rec->Flags, BlockLockDescriptor.FlagDirty);

    /// <summary>Restore: the block matches its durable copy, so its dirty mark goes, unless it is torn (a torn block
    /// is written back again, flagged torn). Only while no one else can reach the block.</summary>
    public static void ClearDirtyUnlessTorn(BlockLockRecord* rec)
    {
        if (!IsTorn(rec))
        {
            Interlocked.And(ref rec->Flags, ~BlockLockDescriptor.FlagDirty);
        }
    }

    public static bool IsTorn(BlockLockRecord* rec) => (Volatile.Read(ref rec->Flags) & BlockLockDescriptor.FlagTorn) != 0;

    private static bool OwnerFree(BlockLockRecord* rec, int slot) => Volatile.Read(ref rec->Owner) == 0;

    private static bool NoReaders(BlockLockRecord* rec, int slot) => !AnyReaders(rec);

    // ---- Sleeping -----------------------------------------------------------------------------------------

    /// <summary>Bumps Seq and wakes every sleeper if bit 0 says there may be any. Callers have just made a locked
    /// RMW on the state, which orders this read after their change.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WakeIfSleepers(BlockLockRecord* rec)
    {
        int v = Volatile.Read(ref rec->Seq);
        if ((v & BlockLockDescriptor.SeqSleepersBit) != 0)
        {
            WakeAll(rec, v);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void WakeAll(BlockLockRecord* rec, int seen)
    {
        // Bump to the next even value: clears the sleepers bit and changes the word, so a sleeper that read the old
        // value gets EAGAIN from FUTEX_WAIT. If the CAS fails someone else changed Seq, which has the same effect.
        Interlocked.CompareExchange(ref rec->Seq, (seen + 1) & ~BlockLockDescriptor.SeqSleepersBit, seen);
        Interop.Libc.FutexWake(&rec->Seq, int.MaxValue);
    }

    /// <summary>Unconditionally bumps Seq and wakes everyone (recovery, shutdown).</summary>
    public static void WakeAllSleepers(BlockLockRecord* rec)
    {
        Interlocked.Add(ref rec->Seq, 2);
        Interop.Libc.FutexWake(&rec->Seq, int.MaxValue);
    }

    // ---- Recovery -----------------------------------------------------------------------------------------

    /// <summary>
    /// Removes every trace of <paramref name="slot"/> from the record: its read holds and wait flag (its whole byte),
    /// its ownership (marking the block torn if the write was active), and its line's Waiting bit unless another slot
    /// of the line waits; wakes sleepers. Only for a slot whose process can no longer act (dead, or left with no
    /// operation in flight). Returns what it released.
    /// </summary>
    public static ScrubResult ScrubSlot(BlockLockRecord* rec, int slot)
    {
        var result = default(ScrubResult);
        ulong* word = ReaderWord(rec, slot);
        int shift = ReaderShift(slot);
        ulong mask = 0xFFUL << shift;
        while (true)
        {
            ulong old = Volatile.Read(ref *word);
            if ((old & mask) == 0)
            {
                break;
            }

            if (Interlocked.CompareExchange(ref *word, old & ~mask, old) == old)
            {
                result.ReadHolds = (int)((old >> shift) & BlockLockDescriptor.MaxHoldsPerSlot);
                result.Waiting = ((old >> shift) & BlockLockDescriptor.SlotWaitFlag) != 0;
                break;
            }
        }

        uint owner = Volatile.Read(ref rec->Owner);
        if ((owner & BlockLockDescriptor.OwnerSlotMask) == (uint)slot + 1)
        {
            if ((owner & BlockLockDescriptor.OwnerActiveBit) != 0)
            {
                // The writer may have stopped half way through its copy: the block is partly old, partly new.
                Interlocked.Or(ref rec->Flags, BlockLockDescriptor.FlagTorn | BlockLockDescriptor.FlagDirty);
                result.Torn = true;
            }

            Interlocked.CompareExchange(ref rec->Owner, 0, owner);
            result.Owned = true;
        }

        // Always, not only when its flag was set: the process may have died between clearing its flag and clearing
        // the line's bit, which would keep new readers out with no writer waiting.
        RefreshWaiting(rec, slot >> 6);

        // Always wake, even when nothing was released: the dead process may have released and then died before its
        // own wake (spin model F2), or inside WakeAll between clearing the sleepers bit and FUTEX_WAKE (F2b), leaving
        // a sleeper that no bit announces any more. One FUTEX_WAKE per record of a dead member's containers.
        WakeAllSleepers(rec);

        return result;
    }

    /// <summary>Whether the record has anything set for <paramref name="slot"/>: a read or wait flag in its byte, or
    /// an Owner naming it. A racy look (for skipping work), not a judgement.</summary>
    public static bool NamesSlot(BlockLockRecord* rec, int slot) =>
        ((Volatile.Read(ref *ReaderWord(rec, slot)) >> ReaderShift(slot)) & 0xFF) != 0
        || (Volatile.Read(ref rec->Owner) & BlockLockDescriptor.OwnerSlotMask) == (uint)slot + 1;

    /// <summary>Most CAS attempts on one word per call: a member flipping a word in a loop must not keep the broker
    /// (which calls this under its state lock) spinning. A word left unrepaired is repaired by the next check.</summary>
    private const int MaxRepairAttempts = 64;

    /// <summary>
    /// The repair of "Repair" in the class comment: lowers every reader count above what its slot may hold (0 for a
    /// slot with no live member) and clears the wait flag of every slot that may not wait, on every reader line of
    /// the record (<paramref name="lines"/>), each with a CAS from the word judged, so that no live member's byte is
    /// touched; then clears the Waiting bits of lines where no slot waits (<see cref="RefreshWaiting"/>); clears an
    /// Owner that names no slot that may own; marks the block torn if it clears an active Owner (like
    /// <see cref="ScrubSlot"/>); wakes sleepers if it changed anything. The caller must hold what makes
    /// <paramref name="claims"/> true while this runs: the broker's state lock (no slot gains a member) and the broker
    /// slot's ledger gate (no broker thread claims). A forged byte on a line whose ReaderLines bit is clear blocks no
    /// one (writers do not look there) but is lowered here too, so a later reader of that line does not reveal it.
    /// </summary>
    public static RepairResult ClearUnowned(BlockLockRecord* rec, int lines, in SlotClaims claims)
    {
        var result = default(RepairResult);
        ulong* words = (ulong*)((byte*)rec + BlockLockDescriptor.ReadersOffset);
        for (int w = 0; w < lines * BlockLockDescriptor.WordsPerLine; w++)
        {
            for (int attempt = 0; attempt < MaxRepairAttempts; attempt++)
            {
                ulong old = Volatile.Read(ref words[w]);
                if (old == 0)
                {
                    break;
                }

                ulong next = old;
                ulong loweredReads = 0, clearedWaits = 0;
                for (int i = 0; i < 8; i++)
                {
                    int slot = (w << 3) | i;
                    int shift = i << 3;
                    uint b = (uint)(old >> shift) & 0xFF;
                    if (b == 0)
                    {
                        continue;
                    }

                    uint count = b & BlockLockDescriptor.MaxHoldsPerSlot;
                    uint may = claims.MayRead(slot);
                    if (count > may)
                    {
                        next = (next & ~((ulong)BlockLockDescriptor.MaxHoldsPerSlot << shift)) | ((ulong)may << shift);
                        loweredReads |= 1UL << (slot & 63);
                    }

                    if ((b & BlockLockDescriptor.SlotWaitFlag) != 0 && !claims.MayWait(slot))
                    {
                        next &= ~((ulong)BlockLockDescriptor.SlotWaitFlag << shift);
                        clearedWaits |= 1UL << (slot & 63);
                    }
                }

                // CAS from the word judged: a live member's concurrent change of its own byte fails the CAS, and
                // the word is judged again (its byte is never changed by this).
                if (next == old || Interlocked.CompareExchange(ref words[w], next, old) == old)
                {
                    result.AddReaders(w >> 3, loweredReads);
                    result.AddWaiting(w >> 3, clearedWaits);
                    break;
                }
            }
        }

        ulong waitingLines = Volatile.Read(ref rec->Waiting);
        for (int line = 0; line < lines; line++)
        {
            RefreshWaiting(rec, line); // also puts back a bit lost while a slot of the line still waits (F4b)
        }

        if ((waitingLines & ~(lines == BlockLockDescriptor.MaxLines ? ulong.MaxValue : (1UL << lines) - 1)) != 0)
        {
            // Bits of lines the record does not have: forged (no slot can wait there).
            Interlocked.And(ref rec->Waiting, lines == BlockLockDescriptor.MaxLines ? ulong.MaxValue : (1UL << lines) - 1);
        }

        result.WaitingLines = waitingLines & ~Volatile.Read(ref rec->Waiting);

        uint owner = Volatile.Read(ref rec->Owner);
        if (owner != 0 && !claims.MayOwn(owner) && Interlocked.CompareExchange(ref rec->Owner, 0, owner) == owner)
        {
            // From the value judged only: if the word changed meanwhile (a live writer's CAS after a forger's own
            // reset, say), it is not this value and is left alone.
            if ((owner & BlockLockDescriptor.OwnerActiveBit) != 0)
            {
                // Claimed active by no live writer: whoever claimed it may have written part of the block.
                Interlocked.Or(ref rec->Flags, BlockLockDescriptor.FlagTorn | BlockLockDescriptor.FlagDirty);
            }

            result.Owner = owner;
        }

        if (result.Any)
        {
            WakeAllSleepers(rec);
        }

        return result;
    }
}

/// <summary>What may stay set in a record that <see cref="BlockLock.ClearUnowned"/> checks: everything of the live
/// member slots, and of the broker's own slot exactly what the broker's threads may hold now.</summary>
internal readonly struct SlotClaims
{
    /// <summary>Slots with a live member: their reader bytes and an Owner naming them are left as they are (the broker
    /// cannot tell its own words from forged ones). Containing <see cref="BrokerSlot"/>: the broker slot is trusted
    /// too.</summary>
    public SlotSet LiveSlots { get; init; }

    /// <summary>The broker's slot in this container's records (the last one).</summary>
    public int BrokerSlot { get; init; }

    /// <summary>The broker slot's words are left as they are, like a live member's (a record that names the broker
    /// slot nowhere, judged without the ledger's gate). Saves a copy of <see cref="LiveSlots"/> per record.</summary>
    public bool TrustBrokerSlot { get; init; }

    /// <summary>Read holds the broker's threads may have on the block: those acquiring or holding one. The broker
    /// slot's byte is lowered to this.</summary>
    public int BrokerReads { get; init; }

    /// <summary>A broker thread has claimed Owner (pending or active).</summary>
    public bool BrokerOwns { get; init; }

    /// <summary>A broker thread waits to become owner (the broker slot's wait flag is its own).</summary>
    public bool BrokerWaits { get; init; }

    private bool Trusted(int slot) => LiveSlots.Contains(slot) || (TrustBrokerSlot && slot == BrokerSlot);

    internal uint MayRead(int slot) =>
        Trusted(slot) ? BlockLockDescriptor.MaxHoldsPerSlot
        : slot == BrokerSlot ? (uint)Math.Min(BrokerReads, BlockLockDescriptor.MaxHoldsPerSlot)
        : 0;

    internal bool MayOwn(uint owner)
    {
        uint field = owner & BlockLockDescriptor.OwnerSlotMask;
        if (field == 0 || field > BlockLockDescriptor.MaxSlots)
        {
            return false; // names no slot at all
        }

        int slot = (int)field - 1;
        return Trusted(slot) || (slot == BrokerSlot && BrokerOwns);
    }

    internal bool MayWait(int slot) => Trusted(slot) || (slot == BrokerSlot && BrokerWaits);
}

/// <summary>What <see cref="BlockLock.ClearUnowned"/> cleared from one record.</summary>
internal struct RepairResult
{
    /// <summary>Slots whose read count was lowered (to 0, or for the broker slot to what it may hold); null: none.</summary>
    public SlotSet? ReaderSlots;

    /// <summary>The Owner value cleared, or 0.</summary>
    public uint Owner;

    /// <summary>Slots whose wait flag was cleared; null: none.</summary>
    public SlotSet? WaitingSlots;

    /// <summary>Bit g: line g's Waiting bit was cleared (no slot of it waits).</summary>
    public ulong WaitingLines;

    public readonly bool Any => ReaderSlots is not null || Owner != 0 || WaitingSlots is not null || WaitingLines != 0;

    internal void AddReaders(int line, ulong mask)
    {
        if (mask != 0)
        {
            (ReaderSlots ??= new SlotSet()).AddLine(line, mask);
        }
    }

    internal void AddWaiting(int line, ulong mask)
    {
        if (mask != 0)
        {
            (WaitingSlots ??= new SlotSet()).AddLine(line, mask);
        }
    }

    /// <summary>Adds another result (of another record) for a summary.</summary>
    public void Add(in RepairResult other)
    {
        if (other.ReaderSlots is { } r)
        {
            (ReaderSlots ??= new SlotSet()).UnionWith(r);
        }

        if (other.WaitingSlots is { } w)
        {
            (WaitingSlots ??= new SlotSet()).UnionWith(w);
        }

        Owner |= other.Owner;
        WaitingLines |= other.WaitingLines;
    }

    public override readonly string ToString() =>
        $"reader slots {ReaderSlots?.ToString() ?? "-"}, owner {(Owner == 0 ? "-" : $"0x{Owner:x8}")}, waiting slots {WaitingSlots?.ToString() ?? "-"}";
}

/// <summary>What <see cref="BlockLock.ScrubSlot"/> released from one record.</summary>
internal struct ScrubResult
{
    public int ReadHolds;
    public bool Owned;
    public bool Torn;
    public bool Waiting;

    public readonly bool Any => ReadHolds != 0 || Owned || Waiting;
}
