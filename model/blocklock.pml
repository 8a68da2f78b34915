/*
 * blocklock.pml -- Promela model of SharedStore's cross-process block lock
 * (src/SharedStore.Core/Locks/BlockLock.cs, LockWait.cs, Regions/BlockLockDescriptor.cs)
 * and of the broker's recovery of a dead slot (BlockLock.ScrubSlot, called from
 * BrokerState.RemoveMember for every block of the container when a member's socket closes).
 *
 * ---------------------------------------------------------------------------------------------
 * ABSTRACTION (one block record, 3 member slots, 2-3 client threads, crashes, broker recovery)
 * ---------------------------------------------------------------------------------------------
 *  Shared record (lock layout 3)      model
 *  reader lines                       slot 0 on line 0; slots 1 and 2 on line 1, in one 64-bit word of
 *                                                it (LINE(s), LB(s) = its bit). Two slots in one word
 *                                                is exact for that word; slots in different words of a
 *                                                line are read one after another like two lines, the
 *                                                shape lines 0 and 1 give.
 *  slot s's byte, bits 0-6            R[s]       read count. Every update of a reader word is a CAS on
 *                                                the whole word, atomic over all its bytes, so "CAS
 *                                                byte s: b -> b+1" is an atomic test-and-set of R[s]
 *                                                alone. A CAS in the code also fails when another
 *                                                byte of the word (or the slot's own flag) changed;
 *                                                that only adds a retry that changes nothing (a
 *                                                stutter), so it is left out.
 *  slot s's byte, bit 7               WF[s]      the slot waits to write (SlotWaitFlag).
 *  ReaderLines                        RL         bit g = line g may hold reads; set by a reader before
 *                                                its first CAS (plain load, then a locked OR if clear),
 *                                                never cleared.
 *  AnyReaders                         ANYREADERS one step per load: RL, then line 0's counts, then
 *                                                line 1's (each named line; stops at the first count).
 *  Owner                              O          0 | s+1 (pending) | (s+1)|ACT (active). ACT = 8
 *                                                stands for OwnerActiveBit, SLOTMASK = 7 for
 *                                                OwnerSlotMask.
 *  Waiting                            W          bit g = some slot of line g may wait. A waiter sets its
 *                                                flag (one step), then ORs its line bit (one step);
 *                                                the last waiting thread of a slot clears its flag,
 *                                                then RefreshWaiting(line) (REFRESH, a loop: load W's
 *                                                bit; look at the line; Or or And if they disagree;
 *                                                again -- one step each).
 *  Seq (futex word)                   sb, stale[] sb = bit 0 (sleepers present). The value itself
 *                                                matters only for equality with a value a thread
 *                                                loaded earlier (CAS, FUTEX_WAIT), so it is kept as
 *                                                stale[t] = "Seq changed since t loaded it" (no ABA;
 *                                                the int32 wraps only after 2^31 bumps).
 *  Flags.Torn                         -          not modelled (data, not locking).
 *  FUTEX_WAIT(&Seq, v)                d_step { !stale[t] -> blocked[t] = 1 } then !blocked[t]
 *                                                (if Seq changed it returns at once = EAGAIN).
 *                                                The code's 50 ms sleep slice: by default NOT
 *                                                modelled (a lost wake-up is then a hang, i.e. the
 *                                                model checks that no wake-up is ever lost). With
 *                                                -DSLICE a sleeper may also return without a wake,
 *                                                but only once a crash has happened (finding F2b:
 *                                                after a crash inside WakeAll the code still relies
 *                                                on the slice).
 *  FUTEX_WAKE(&Seq, all)              clears every blocked[] flag in one step.
 *  Volatile.Read / Write, Interlocked one Promela step each (atomic where it is an RMW);
 *                                                sequential consistency is assumed (x86 locked
 *                                                instructions + the fences in the code; the model
 *                                                does not explore weak-memory reorderings).
 *  LockWait.WaitFor                   WAIT_FOR(): the spin phase is bounded in time in the
 *                                                code and is modelled as one probe of the
 *                                                predicate; then the sleep loop exactly as coded
 *                                                (read Seq; CAS bit 0 on, or fence if already on;
 *                                                re-check; FUTEX_WAIT on the value seen).
 *  Timeout / cancellation / broker    off by default; with -DGIVEUP every wait may give up
 *  loss (LockWait.Check)                         (once per thread) and the thread releases
 *                                                exactly as the code does on that path.
 *  waitGate + localWaiters            lw[s], updated in the step of the flag's CAS (the gate
 *                                                is process-local and one writer thread per slot is
 *                                                modelled, so lw[s] is 0/1); the Or / RefreshWaiting
 *                                                steps that the gate also covers are separate steps.
 *                                                The broker slot's gate (lgate) is held across them.
 *  MaxHoldsPerSlot (255)              not modelled (holds <= 2).
 *
 *  Reader (AcquireRead; TryAcquireReadFast is one iteration of the same loop and is not modelled
 *  separately): step 1 load own byte b; b = 0: load Owner, then Waiting, wait (ReaderMayEnter) if
 *  either is set; b > 0: load Owner, wait while Active. Step 2 CAS b -> b+1. Step 3 b = 0: re-load
 *  Owner then Waiting; b > 0: re-load Owner for Active; if set, ReleaseRead and back to step 1.
 *  Writer (AcquireWrite): step 1 Owner CAS / WaitForOwnership; then loop { if AnyReaders: wait
 *  (NoReaders); Interlocked.Or(Owner, Active); if !AnyReaders: acquired; else Interlocked.And(Owner,
 *  ~Active), WakeIfSleepers, loop }.
 *
 *  Threads: proctype Reader (acquire k reads -- k = 2 is a re-entrant read -- then release them)
 *  and Writer (AcquireWrite incl. the WouldDeadlock check of SharedObject.Write, write,
 *  ReleaseWrite). A thread belongs to a slot (process); several threads may share a slot.
 *
 *  Crash: proctype Crasher may, at any moment, kill a slot (MAXCRASH crashes in all). The body of
 *  every thread of the slot is wrapped in `unless { crashed[s] }`, which has priority over every
 *  statement of the body, so a crashed thread executes nothing more; its locals are cleared (lost)
 *  and the slot's process-local lw[s] is reset. Shared memory keeps whatever the thread wrote.
 *  To keep the state space small the kill is made immediate: while cp = s+1 only the threads of
 *  slot s may run (`provided` clause) and all they can do is take their escape (the bookkeeping
 *  of a dead thread, not an action of it).
 *
 *  Broker: proctype Broker(s) waits for crashed[s] (the socket closes) and runs ScrubSlot(s)
 *  step by step as coded: read reader word, CAS byte s (count and flag) to 0; read Owner, CAS it
 *  to 0 if it names s; RefreshWaiting(line of s), always; Add 2 to Seq and FUTEX_WAKE (with
 *  -DSCRUB_WAKE_IF_SLEEPERS the older code: WakeIfSleepers if nothing was released). One broker
 *  process per slot (the real broker scrubs under its gate, one at a time: a subset of these
 *  interleavings).
 *
 * ---------------------------------------------------------------------------------------------
 * PROPERTIES
 * ---------------------------------------------------------------------------------------------
 *  Ghost state: nr = reads held by live threads, nw = writes held by live threads (a crash drops
 *  the dead threads' contributions atomically with the crash).
 *  MUTEX     asserted at each entry (reader: nw == 0; writer: nw == 0 && nr == 0); every state
 *            with a violation is reached through an entry, so this is the invariant
 *            nw <= 1 && !(nw > 0 && nr > 0).
 *  RECOVERY  asserted when ScrubSlot(s) ends: R[s] == 0, WF[s] == 0, (O & 7) != s+1 (only slot s
 *            can set these, and it is dead), and the Waiting bit of s's line is clear or some flag
 *            of the line is set or a live thread of the line is between clearing its own flag and
 *            the end of its RefreshWaiting (inref: that refresh decides); and at the end (all
 *            threads done, all crashed slots scrubbed) the record is completely free: R == 0,
 *            WF == 0, O == 0, W == 0 (a Waiting bit left set keeps every new reader out for good).
 *  PRIORITY  (docs/ARCHITECTURE.md 4, read per word; asserted when a reader returns Acquired from
 *            a 0 -> 1 increment of its slot's byte,
 *            i.e. a reader whose SLOT did not already hold the block -- the implementation's notion
 *            of "already holds" is per slot, not per thread):
 *              PRIO_O  it does not enter if Owner != 0 held continuously from its increment
 *                      to its entry;
 *              PRIO_W  it does not enter if Waiting != 0 held continuously over that window;
 *              PRIO_WA it does not enter if some writer waited announced (its flag set and
 *                      its OR of the line bit done, wa[]) continuously over that window: the
 *                      line bits stand for the flags (-DNO_PRIO_WA turns it off);
 *              PRIO_STRICT (-DPRIO_STRICT) it does not enter if (Owner != 0 || Waiting != 0)
 *                      held continuously over that window (the class comment's "readers never
 *                      see a gap between the two").
 *  NO DEADLOCK  safety run: no invalid end states (every thread, crashed or not, terminates or
 *            sits at an end label).
 *  LIVENESS  ltl live: <> alldone under weak fairness (pan -a -f): every live thread completes
 *            its finite workload (so each waiting thread eventually enters or gives up / dies);
 *            with crashes this needs the broker's scrub and its wake. Starvation freedom under
 *            unbounded workloads is NOT claimed (writers race on the Owner CAS; readers yield to
 *            writers by design).
 *
 *  Configurations (-DCFG=n):
 *    1 (default) T0: slot 0 re-entrant reader (2 holds); T1: slot 1 writer; T2: slot 2 writer.
 *    2           T0: slot 0 reader; T1: slot 0 writer (same process); T2: slot 1 writer.
 *    3           T0, T1: two reader threads of slot 0; T2: slot 1 writer.   (finding F1)
 *    4           T0: slot 0 re-entrant reader (2 holds); T1: slot 1 writer.
 *    5           T0: slot 0 writer; T1: slot 1 writer.
 *    6           T0: slot 0 reader; T1: slot 0 writer (same process).
 *    10          T0, T1, T2: writers of slots 0, 1, 2 (two waiters of line 1 while slot 0 owns).
 *    11          T0, T1: writers of slots 1 and 2 (one line).
 *    12          T0: Holder of slot 0 (owns from the start, only releases); T1, T2: writers of
 *                slots 1 and 2 (one line); a crash of slot 1 or 2 at any step.
 *  The 3-thread configurations are checked without crashes (with one crash they exceed the
 *  3-minute budget: > 60 M states), the 2-thread ones with a crash of either slot at any step.
 *
 *  Mutation switches (used by model/mutants/*.pml): NO_REENTRANT_RECHECK (re-entrant reads neither
 *  wait for nor re-check Active: the old reader, F1), NO_WRITER_RECHECK (writer goes active
 *  without re-reading the readers: the old writer, F1), SCRUB_WAKE_ONLY_IF_ANY (recovery wakes
 *  only if it released something: the old ScrubSlot, F2), NO_RECHECK (reader skips step 3),
 *  NO_SLEEP_FENCE (sleeper does not set bit 0 of Seq), NO_SCRUB_WAIT (recovery does not refresh the
 *  Waiting bit), NO_ANNOUNCE / ANNOUNCE_AFTER_CAS (reader does not set its ReaderLines bit / sets
 *  it after its CAS), SCRUB_REFRESH_IF_FLAG (recovery refreshes the line only if the dead slot's
 *  flag was set), NO_RELOOK (a single-pass RefreshWaiting without the look after its And),
 *  REFRESH_SINGLE_PASS (RefreshWaiting and the repair's refresh before commit 02aea4c: findings F4,
 *  F4b), ANNOUNCE_FIRST_ONLY (a reader announces only before a first hold, before 02aea4c: F5).
 *  CHECK_WAITANN: the WAITANN monitor (docs/MODEL.md); NO_END_W: no final assert(W == 0) (so that
 *  a search with pan -c0 reaches WAITANN past F4's stale bit).
 *  CRASHSLOT=n: only slot n may crash.
 *  Other switches: WAKE_ATOMIC (WakeAll's Seq CAS and FUTEX_WAKE are one step: no crash between
 *  them; separates F2 from F2b), SCRUB_WAKE_IF_SLEEPERS (the ScrubSlot between the F2 and F2b
 *  fixes: wakes only if it released something or the sleepers bit is set; F2b), FIX_WO (WriterPresent loads Waiting before Owner: PRIO_STRICT still fails,
 *  see docs/MODEL.md F3), GIVEUP, SLICE, PRIO_STRICT.
 *
 * ---------------------------------------------------------------------------------------------
 * FORGERY AND REPAIR (-DFORGE, configurations 7-9; issue 13, finding 3)
 * ---------------------------------------------------------------------------------------------
 *  member[s]   slot s has a live member. Slot 0 is always one; slot 1 never; slot 2 is joined later
 *              (CFG 7) or is the broker's own slot (CFG 8, 9: BSLOT = 2).
 *  Forger(2)   a member process writing slot 2's words of the record (it maps it read-write), up
 *              to NFORGE times, only while slot 2 has no member: R[2]++; Owner 0 -> 3 (CAS from 0),
 *              its own forged 3 -> 3|ACT or -> 0; W |= bit 2; its own forged W bit cleared. It never
 *              overwrites a live member's word (a forger that does breaks exclusion by itself, with
 *              or without a repair: ARCHITECTURE.md 5).
 *  Repairer    the broker's BlockLock.ClearUnowned for one record, step by step: under the broker's
 *              state lock (gate) and the broker-slot ledger's gate (lgate) it snapshots the live set,
 *              then per slot loads the reader byte and CASes it down to what the slot may hold
 *              (255 for a member, the ledger's read count for BSLOT, else 0; a failed CAS is retried
 *              once), loads Owner and CASes it from that value to 0 unless it names a member (or BSLOT
 *              while the ledger says owned), clears the Waiting bits of slots that may not wait (one
 *              atomic And), and if anything changed bumps Seq and FUTEX_WAKEs. It runs whenever a
 *              waiter asked (ask; the code asks after 250 ms of waiting, the model every time a waiter
 *              is about to sleep) and once at the end, after the forger stopped.
 *  Joiner      (CFG 7) gives slot 2 to a new member under the gate; the member's thread (T1, a reader)
 *              starts then. By default it joins only once slot 2's words are clean; with
 *              -DJOIN_ANYTIME at any moment, inheriting forged words (the documented reuse escape: a
 *              liveness loss only, checked for safety with pan -E).
 *  BWriter     (CFG 8) a broker applier: AcquireWrite with the ledger -- every Owner claim CAS and
 *              the owned flag in one critical section under lgate, the release store and the flag
 *              reset likewise, the process-local waiter count and W bit 2 under lgate.
 *  BReader     (CFG 9) the durable write-back: ledger read count raised under lgate, then
 *              TryAcquireReadFast (no wait), hold, ReleaseRead, count lowered under lgate.
 *  With FORGE a sleeper may also return from FUTEX_WAIT without a wake once the forger has acted
 *  (the code's sleep slice, which also ends when the next ask is due): a forger that clears its
 *  own word wakes no one.
 *  Properties: MUTEX and PRIORITY as above (live threads only; forged words are nobody's holds);
 *  REPAIRED: after all threads are done and the final check ran, no reader byte, Owner or Waiting
 *  bit is set for a slot without a live member; no invalid end state; <> alldone under weak
 *  fairness (every waiter behind a forged word gets in).
 *  Configurations: 7 T0: slot 0 writer, T1: slot 2 reader (after the join); 8 T0: slot 0 writer,
 *  T1: broker applier (slot 2); 9 T0: slot 0 writer, T1: broker write-back reader (slot 2).
 *  Mutation switches: REPAIR_NO_GATE (the judgement does not hold the state lock: a join can fall
 *  between it and the CAS), REPAIR_IGNORES_LEDGER (the broker slot judged as memberless),
 *  CLAIM_OUTSIDE_GATE (the broker's Owner CAS outside the ledger's gate, the owned flag set after).
 */

#ifndef CFG
#define CFG 1
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif

#define NS 3            /* slots */
#define NT 3            /* client thread ids (array sizes) */
#if CFG >= 4 && CFG != 10 && CFG != 12
#define NTH 2           /* threads actually run */
#else
#define NTH 3
#endif
/* Lock layout 3: slot 0 on reader line 0, slots 1 and 2 on reader line 1 (one word of it). */
#define LINE(sl) ((sl) == 0 -> 0 : 1)
#define LB(sl) ((sl) == 0 -> 1 : 2)          /* the slot's bit in ReaderLines and Waiting */
/* a look at line g's words (one step: the model's slots of a line share one word): some wait flag set */
#define LINEFLAGS(g) ((g) == 0 -> WF[0] : (WF[1] || WF[2]))
#define NOWA (!wa[0] && !wa[1] && !wa[2])
#define ACT 8           /* OwnerActiveBit */
#define SLOTMASK 7      /* OwnerSlotMask */

/* ---- shared record ---- */
byte R[NS];             /* read count of each slot: bits 0-6 of its byte (slot 0: line 0; 1, 2: one word of line 1) */
bit WF[NS];             /* wait flag of each slot: bit 7 of its byte */
byte O;                 /* Owner */
byte W;                 /* Waiting: bit g = some slot of reader line g may wait */
byte RL;                /* ReaderLines: bit g = reader line g may hold reads (never cleared) */
bit sb;                /* Seq bit 0: sleepers may be present */
bit stale[NT + NS];     /* Seq has changed since thread t (broker of slot s: NT + s) last loaded it
                           (1 when it holds no value) */

/* ---- kernel / process state ---- */
bit blocked[NT];        /* thread sleeping in FUTEX_WAIT */
byte lw[NS];            /* process-local localWaiters of slot s (guarded by waitGate) */
bit crashed[NS];
bit scrubbed[NS];
byte ncrash;
byte slot_of[NT];

/* ---- ghosts ---- */
byte nr;                /* reads held by live threads */
byte nw;                /* writes held by live threads */
byte rd[NT];            /* reads held by thread t */
bit wr[NT];             /* write held by thread t */
bit po[NT];             /* Owner != 0 continuously since t's 0->1 increment */
bit pw[NT];             /* Waiting != 0 continuously since ... */
bit pwo[NT];            /* (Owner|Waiting) != 0 continuously since ... */
bit wa[NS];             /* slot s waits announced: its flag set and its Or of the line bit done, its flag not yet cleared */
bit pwa[NT];            /* some wa[] set continuously since t's 0->1 increment */
bit rf[NT];             /* thread t is between clearing its wait flag and the end of its RefreshWaiting */
byte inref[2];          /* live threads (and broker refreshes) inside that window, per line */
#ifdef CHECK_WAITANN
byte gap[2];            /* RefreshWaiting calls of line g between an And and their next Or or return (GAP_IN) */
byte ing[10];           /* by _pid: g+1 while that process is inside such a window of line g */
#endif
byte ndone;             /* threads finished (normally or by crash) */
byte alive[NS];         /* live threads of slot s */
byte cp;                /* s+1 while slot s is being killed: only its threads run (their escapes) */
hidden byte pslot[NT + 1];  /* slot+1 of the thread with that _pid (init is _pid 0, threads 1..NT) */
hidden byte gi;

#ifdef FORGE
#ifndef NFORGE
#define NFORGE 2
#endif
#if CFG == 7
#define BSLOT 255       /* no broker slot in this configuration */
#else
#define BSLOT 2         /* the broker's own slot (63 in the code) */
#endif
bit member[NS];         /* slot s has a live member (changed under gate only) */
bit gate;               /* the broker's state lock */
bit lgate;              /* the broker slot ledger's gate (also its waitGate) */
byte lreads;            /* ledger: broker reads acquiring or held */
bit owned;              /* ledger: a broker thread claimed Owner */
bit ask;                /* a waiter asked for a check */
bit rbusy;              /* the repairer is judging */
byte nforge;            /* forger actions so far */
bit fdone;              /* the forger stopped */
bit fo;                 /* ghost: Owner holds the forger's value */
bit fw;                 /* ghost: the forger set Waiting bit 1 (slot 2's line) */
bit ff;                 /* ghost: the forger set slot 2's wait flag */

#define LIVE ((member[0] -> 1 : 0) | (member[1] -> 2 : 0) | (member[2] -> 4 : 0))
#ifdef REPAIR_IGNORES_LEDGER
#define MAYREAD_L(sl, L) ((((L) >> (sl)) & 1) -> 255 : 0)
#define BOWNS 0
#define BWAITS 0
#else
#define MAYREAD_L(sl, L) ((((L) >> (sl)) & 1) -> 255 : ((sl) == BSLOT -> lreads : 0))
#define BOWNS owned
#define BWAITS (BSLOT < NS && lw[BSLOT] > 0)
#endif
/* the Owner value x may stay: it names a member, or the broker slot while a broker thread owns it */
#define MAYOWN_L(x, L) (((x) & SLOTMASK) >= 1 && ((x) & SLOTMASK) <= NS && \
                   ((((L) >> (((x) & SLOTMASK) - 1)) & 1) || (((x) & SLOTMASK) - 1 == BSLOT && BOWNS)))
/* slot 2's wait flag may stay: slot 2 has a member, or it is the broker slot and a broker thread waits */
#define MAYWAIT2_L(L) ((((L) >> 2) & 1) || (BSLOT == 2 && BWAITS))
#define MAYREAD(sl) MAYREAD_L(sl, lv)
#define MAYOWN(x) MAYOWN_L(x, lv)
#define MAYWAIT2 MAYWAIT2_L(lv)
/* lines with a wait flag set */
#define FLAGLINES ((WF[0] -> 1 : 0) | ((WF[1] || WF[2]) -> 2 : 0))
/* A check now would clear something (only slot 2 is ever forged). A waiter asks only then: a check that clears
   nothing changes nothing (it does not even wake), so leaving those out removes only stuttering, and it keeps weak
   fairness meaningful (a waiter asking on every sleep could keep the ledger's gate busy forever in the model; in the
   code it asks every 250 ms). */
#define REPAIRABLE (R[2] > MAYREAD_L(2, LIVE) || (WF[2] && !MAYWAIT2_L(LIVE)) || (O != 0 && !MAYOWN_L(O, LIVE)) || \
                    (W & ~FLAGLINES) != 0)

#endif

#define alldone (ndone == NTH && (!crashed[0] || scrubbed[0]) && (!crashed[1] || scrubbed[1]) && (!crashed[2] || scrubbed[2]))

/* Appended to every step that changes O or W: an absence of the writer ends the windows. */
#define GHOST \
    if :: O == 0 -> po[0] = 0; po[1] = 0; po[2] = 0 :: else -> skip fi; \
    if :: W == 0 -> pw[0] = 0; pw[1] = 0; pw[2] = 0 :: else -> skip fi; \
    if :: O == 0 && W == 0 -> pwo[0] = 0; pwo[1] = 0; pwo[2] = 0 :: else -> skip fi; \
    if :: NOWA -> pwa[0] = 0; pwa[1] = 0; pwa[2] = 0 :: else -> skip fi

#define FUTEX_WAKE_ALL blocked[0] = 0; blocked[1] = 0; blocked[2] = 0
#define FUTEX_WAKE d_step { FUTEX_WAKE_ALL }
/* every change of the value of Seq */
#define SEQ_CHANGED stale[0] = 1; stale[1] = 1; stale[2] = 1; stale[3] = 1; stale[4] = 1; stale[5] = 1

/* BlockLock.WakeIfSleepers + WakeAll: v = Seq; if bit 0: CAS Seq v -> (v+1)&~1 (a new value with bit 0
   clear); FUTEX_WAKE. With WAKE_ATOMIC the CAS and the FUTEX_WAKE are one step, so no crash can fall between
   them (used to separate finding F2 from F2b, see the header). */
#ifdef WAKE_ATOMIC
#define WAKE_IF_SLEEPERS_AT(i) \
    d_step { vb = sb; stale[i] = 0 }; \
    if \
    :: vb -> \
        d_step { if :: !stale[i] -> sb = 0; SEQ_CHANGED :: else -> skip fi; stale[i] = 1; vb = 0; FUTEX_WAKE_ALL } \
    :: else -> stale[i] = 1 \
    fi
#else
#define WAKE_IF_SLEEPERS_AT(i) \
    d_step { vb = sb; stale[i] = 0 }; \
    if \
    :: vb -> \
        d_step { if :: !stale[i] -> sb = 0; SEQ_CHANGED :: else -> skip fi; stale[i] = 1; vb = 0 }; \
        FUTEX_WAKE \
    :: else -> stale[i] = 1 \
    fi
#endif
#define WAKE_IF_SLEEPERS WAKE_IF_SLEEPERS_AT(t)

/* (Volatile.Read(Owner) | Volatile.Read(Waiting)) != 0 -- C# evaluates Owner first. Branches on
   the values loaded; each load is one step. FIX_WO loads Waiting first. */
#ifdef FIX_WO
#define WP_BRANCH(PRESENT, ABSENT) \
    if :: W != 0 -> PRESENT :: else -> if :: O != 0 -> PRESENT :: else -> ABSENT fi fi
#else
#define WP_BRANCH(PRESENT, ABSENT) \
    if :: O != 0 -> PRESENT :: else -> if :: W != 0 -> PRESENT :: else -> ABSENT fi fi
#endif

/* Predicates of LockWait.WaitFor; each sets rdy. */
/* ReaderMayEnter: mine = own byte; mine == 0 ? !WriterPresent : !WriterActive (MaxHoldsPerSlot not modelled) */
#ifdef NO_REENTRANT_RECHECK
#define PRED_MAYENTER   if :: R[s] != 0 -> rdy = 1 :: else -> WP_BRANCH(rdy = 0, rdy = 1) fi
#else
#define PRED_MAYENTER   if :: R[s] != 0 -> rdy = ((O & ACT) == 0) :: else -> WP_BRANCH(rdy = 0, rdy = 1) fi
#endif
#define PRED_OWNERFREE  rdy = (O == 0)
#define PRED_NOREADERS  ANYREADERS; d_step { rdy = !anyr; anyr = 0 }

/* BlockLock.AnyReaders: load ReaderLines, then the counts of each line it names, one line per step, line 0 first
   (the code reads each named line's words and stops at the first with a count). Result in anyr. */
#define ANYREADERS \
    d_step { rl = RL }; \
    d_step { if :: (rl & 1) && R[0] != 0 -> anyr = 1 :: else -> skip fi }; \
    d_step { if :: !anyr && (rl & 2) && (R[1] != 0 || R[2] != 0) -> anyr = 1 :: else -> skip fi; rl = 0 }

/* Reader step 0 (BlockLock.AnnounceLine), before every CAS of the count (F5 fix, commit 02aea4c): plain load of
   ReaderLines, and a locked OR of the line's bit if it was clear (two steps). NO_ANNOUNCE: left out (mutant);
   ANNOUNCE_AFTER_CAS: after the CAS (mutant); ANNOUNCE_FIRST_ONLY: only before a first hold (count 0), the code
   before 02aea4c (mutant f5_announce_first_hold: finding F5). */
#ifndef ANNOUNCE_FIRST_ONLY
#define ANNOUNCE_LINE \
    if :: (RL & LB(s)) == 0 -> RL = RL | LB(s) :: else -> skip fi
#else
#define ANNOUNCE_LINE \
    if :: mine == 0 && (RL & LB(s)) == 0 -> RL = RL | LB(s) :: else -> skip fi
#endif

/* Ghosts of the WAITANN monitor (only with CHECK_WAITANN; otherwise no-ops): ing[p] = g+1 while process p is in a
   RefreshWaiting of line g between an And of it and its next Or or its return; gap[g] counts them. A crash leaves a
   dead thread's gap open until the scrub of its slot has run its own RefreshWaiting (DEAD_GAP_OUT). */
#ifdef CHECK_WAITANN
#define GAP_IN(g)  if :: ing[_pid] == 0 -> ing[_pid] = (g) + 1; gap[g]++ :: else -> skip fi
#define GAP_OUT(g) if :: ing[_pid] != 0 -> ing[_pid] = 0; gap[g]-- :: else -> skip fi
#define DEAD_GAP_OUT_P(p, s) if :: pslot[p] == (s) + 1 && ing[p] != 0 -> gap[ing[p] - 1]--; ing[p] = 0 :: else -> skip fi
#define DEAD_GAP_OUT(s) DEAD_GAP_OUT_P(1, s); DEAD_GAP_OUT_P(2, s); DEAD_GAP_OUT_P(3, s)
#else
#define GAP_IN(g)  skip
#define GAP_OUT(g) skip
#define DEAD_GAP_OUT(s) skip
#endif

/* BlockLock.RefreshWaiting(line g), since commit 02aea4c (F4 fix): a loop; each round loads the line's Waiting bit
   (one step), looks at the line's flags (one step); if they agree it returns; a flag and no bit: Or the bit (one
   step; this also puts back a bit lost by a refresher killed between its And and its Or: F4b); a bit and no flag: And
   it off (one step); then the next round. A crash may fall between any two steps.
   REFRESH_SINGLE_PASS (mutant f4_refresh_single_pass: finding F4, the code before 02aea4c): if the bit is set and no
   flag, And it off, look at the line again and Or it back if a flag is there; done. NO_RELOOK (mutant): that single
   pass without the second look. */
#if defined(REFRESH_SINGLE_PASS) || defined(NO_RELOOK)
#ifdef NO_RELOOK
#define RELOOK(g) d_step { GAP_OUT(g) }; break
#else
#define RELOOK(g) \
    if :: LINEFLAGS(g) -> d_step { W = W | (1 << (g)); GAP_OUT(g); GHOST }; break :: else -> d_step { GAP_OUT(g) }; break fi
#endif
#define REFRESH(g) \
    do \
    :: (W & (1 << (g))) == 0 -> break \
    :: else -> \
        if \
        :: LINEFLAGS(g) -> break \
        :: else -> \
            d_step { W = W & ~(1 << (g)); GAP_IN(g); GHOST }; \
            RELOOK(g) \
        fi \
    od; \
    skip
#else
#define REFRESH(g) \
    do \
    :: (W & (1 << (g))) == 0 -> \
        if \
        :: LINEFLAGS(g) -> d_step { W = W | (1 << (g)); GAP_OUT(g); GHOST } \
        :: d_step { !LINEFLAGS(g) -> GAP_OUT(g) }; break \
        fi \
    :: (W & (1 << (g))) != 0 -> \
        if \
        :: d_step { LINEFLAGS(g) -> GAP_OUT(g) }; break \
        :: !LINEFLAGS(g) -> d_step { W = W & ~(1 << (g)); GAP_IN(g); GHOST } \
        fi \
    od; \
    skip
#endif

#ifdef GIVEUP
#define GU_OPT   :: !gu -> gu = 1; break
#define GU_SLEEP :: !gu && blocked[t] -> blocked[t] = 0; gu = 1; break
#else
#define GU_OPT
#define GU_SLEEP
#endif

#ifdef SLICE
/* The 50 ms FUTEX_WAIT slice: a sleeper may return without a wake (allowed only after a crash, see
   the header: without crashes the model checks that no wake-up is ever needed from the slice). */
#define SLICE_OPT :: ncrash > 0 && blocked[t] -> blocked[t] = 0
#elif defined(FORGE)
/* With a forger: the slice (and the repair clock) after the forger has acted. */
#define SLICE_OPT :: nforge > 0 && blocked[t] -> blocked[t] = 0
#else
#define SLICE_OPT
#endif

#ifdef FORGE
#define ASK if :: REPAIRABLE -> ask = 1 :: else -> skip fi;    /* LockWait: waited long enough -> lock_check */
#else
#define ASK
#endif

#ifdef NO_SLEEP_FENCE
#define ANNOUNCE d_step { vb = sb; stale[t] = 0; ok = 1 }
#else
/* v = Seq; if bit 0 clear: CAS v -> v|1 (retry on failure); else Interlocked.MemoryBarrier */
#define ANNOUNCE \
    d_step { vb = sb; stale[t] = 0; ok = 1 }; \
    if \
    :: !vb -> d_step { if :: !stale[t] -> sb = 1; SEQ_CHANGED; stale[t] = 0 :: else -> ok = 0; stale[t] = 1 fi } \
    :: else -> vb = 0 \
    fi
#endif

/* LockWait.WaitFor(pred): returns with rdy = 1, or gu = 1 when it gave up (GIVEUP only). The spin
   phase is one probe of the predicate. */
#define WAIT_FOR(PRED) \
    PRED; \
    if \
    :: rdy -> skip \
    :: else -> \
        do \
        :: ANNOUNCE; \
            if \
            :: ok -> \
                PRED; \
                if \
                :: rdy -> stale[t] = 1; vb = 0; break \
                GU_OPT \
                :: else -> \
                    ASK \
                    d_step { if :: !stale[t] -> blocked[t] = 1 :: else -> skip fi; stale[t] = 1; vb = 0; ok = 0 }; \
                    if \
                    :: !blocked[t] -> skip \
                    GU_SLEEP \
                    SLICE_OPT \
                    fi \
                fi \
            :: else -> skip \
            fi \
        od \
    fi; \
    rdy = 0

/* thread end (normal or crash); the last thread of a slot being killed ends the kill */
#define EXIT d_step { ndone++; alive[s]--; if :: cp == s + 1 && alive[s] == 0 -> cp = 0 :: else -> skip fi }

/* BlockLock.ReleaseRead: Interlocked.Add(word, -unit); WakeIfSleepers. */
#define RELEASE_READ \
    d_step { assert(R[s] > 0); R[s]-- }; \
    WAKE_IF_SLEEPERS

proctype Reader(byte t; byte s; byte k) provided (cp == 0 || cp == pslot[_pid])
{
    byte mine, h;
    bit ok, rdy, gu, vb;
    {
#ifdef FORGE
        member[s];                                                  /* its process joined */
#endif
        do
        :: h < k ->
            /* ---- AcquireRead ---- */
acq:        mine = R[s];                                            /* step 1: load own word */
            if
            :: mine == 0 ->                                         /* WriterPresent: wait */
                WP_BRANCH(goto waitr, skip)
#ifndef NO_REENTRANT_RECHECK
            :: else ->                                              /* re-entry: wait while Active */
                if :: (O & ACT) != 0 -> goto waitr :: else -> skip fi
#else
            :: else -> skip
#endif
            fi;
#if !defined(NO_ANNOUNCE) && !defined(ANNOUNCE_AFTER_CAS)
            ANNOUNCE_LINE;                                          /* step 0: ReaderLines bit before a first hold */
#endif
            d_step {                                                /* step 2: CAS (count bits; a CAS failing on a
                                                                       change of the flag or a neighbour is a stutter) */
                if
                :: R[s] == mine ->
                    R[s] = mine + 1; ok = 1;
                    po[t] = (mine == 0 && O != 0);
                    pw[t] = (mine == 0 && W != 0);
                    pwo[t] = (mine == 0 && (O != 0 || W != 0));
                    pwa[t] = (mine == 0 && !NOWA)
                :: else -> ok = 0
                fi
            };
            if :: !ok -> goto acq :: else -> ok = 0 fi;
#ifdef ANNOUNCE_AFTER_CAS
            ANNOUNCE_LINE;
#endif
#ifndef NO_RECHECK
            if                                                      /* step 3: Dekker re-check */
            :: mine == 0 ->                                         /* against Owner, then Waiting */
                WP_BRANCH(goto backout, skip)
#ifndef NO_REENTRANT_RECHECK
            :: else ->                                              /* re-entrant: against Active */
                if :: (O & ACT) != 0 -> goto backout :: else -> skip fi
#else
            :: else -> skip
#endif
            fi;
#endif
            d_step {                                                /* Acquired: enter */
                assert(nw == 0);
                assert(!po[t]);
                assert(!pw[t]);
#ifdef PRIO_STRICT
                assert(!pwo[t]);
#endif
#ifndef NO_PRIO_WA
                assert(!pwa[t]);
#endif
                po[t] = 0; pw[t] = 0; pwo[t] = 0; pwa[t] = 0;
                nr++; rd[t]++; h++; mine = 0
            }
        :: h == k -> break
        od;
        /* critical section: h holds; then Put releases them */
out:    do
        :: h > 0 ->
            d_step { nr--; rd[t]--; h-- };
            RELEASE_READ
        :: h == 0 -> break
        od;
        goto rdone;
backout: skip;
        d_step { mine = 0; po[t] = 0; pw[t] = 0; pwo[t] = 0; pwa[t] = 0 };
        RELEASE_READ;
        goto acq;
waitr:
        mine = 0;
        WAIT_FOR(PRED_MAYENTER);
        if :: gu -> goto out :: else -> goto acq fi;
rdone:  skip
    } unless {
        /* crashed: the thread's local state is lost (cleared so that dead states compare equal) */
        crashed[s] -> d_step { mine = 0; h = 0; ok = 0; rdy = 0; gu = 0; vb = 0 }
    };
    EXIT
}

proctype Writer(byte t; byte s) provided (cp == 0 || cp == pslot[_pid])
{
    byte rl;
    bit ok, rdy, gu, cleared, vb, anyr;
    {
        /* SharedObject.Write: WouldDeadlock if this process holds a read on the block */
        if
        :: R[s] != 0 -> goto wdone
        :: else -> skip
        fi;
        /* ---- AcquireWrite step 1: fast path CAS Owner 0 -> s+1 ---- */
        d_step { if :: O == 0 -> O = s + 1; ok = 1; GHOST :: else -> ok = 0 fi };
        if
        :: !ok ->
            /* WaitForOwnership, under waitGate: the first waiting thread of the process sets the slot's wait flag
               (CAS on its word), then Interlocked.Or of its line's Waiting bit (two steps: a crash may fall between) */
            d_step { lw[s]++; if :: lw[s] == 1 -> WF[s] = 1; cleared = 1 :: else -> cleared = 0 fi };
            if :: cleared -> d_step { W = W | LB(s); wa[s] = 1; cleared = 0; GHOST } :: else -> skip fi;
            skip;
            do
            :: d_step { if :: O == 0 -> O = s + 1; ok = 1; GHOST :: else -> ok = 0 fi };
                if
                :: ok -> break
                :: else ->
                    WAIT_FOR(PRED_OWNERFREE);
                    if :: gu -> break :: else -> skip fi
                fi
            od;
            /* finally, under waitGate: the last waiting thread of the process clears its flag (CAS), then
               RefreshWaiting(its line); then, outside the gate, wakes */
            atomic {
                lw[s]--;
                if
                :: lw[s] == 0 -> WF[s] = 0; wa[s] = 0; rf[t] = 1; inref[LINE(s)]++; cleared = 1; GHOST
                :: else -> cleared = 0
                fi
            };
            if
            :: cleared ->
                REFRESH(LINE(s));
                d_step { rf[t] = 0; inref[LINE(s)]--; cleared = 0 };
                WAKE_IF_SLEEPERS
            :: else -> skip
            fi;
            if :: gu -> goto wdone :: else -> ok = 0 fi
        :: else -> ok = 0
        fi;
        /* ---- step 2: drain readers (AnyReaders: ReaderLines, then each named line) ---- */
drain:  skip;
        ANYREADERS;
        if
        :: anyr ->
            anyr = 0;
            WAIT_FOR(PRED_NOREADERS);
            if
            :: gu ->
                d_step { O = 0; GHOST };                        /* Interlocked.Exchange(Owner, 0) */
                WAKE_IF_SLEEPERS;
                goto wdone
            :: else -> skip
            fi
        :: else -> skip
        fi;
        /* ---- step 3: Interlocked.Or(Owner, Active), then AnyReaders again ---- */
        d_step { O = O | ACT; GHOST };
#ifndef NO_WRITER_RECHECK
        ANYREADERS;
        if
        :: anyr ->
            d_step { anyr = 0; O = O & ~ACT; GHOST };           /* Interlocked.And(Owner, ~Active) */
            WAKE_IF_SLEEPERS;                                   /* re-entrant readers wait for Active to clear */
            goto drain
        :: else -> skip
        fi;
#endif
        d_step { assert(nw == 0 && nr == 0); nw++; wr[t] = 1 };
        /* data copy */
        d_step { nw--; wr[t] = 0 };
        /* ---- ReleaseWrite: Interlocked.Exchange(Owner, 0); WakeIfSleepers ---- */
        d_step { O = 0; GHOST };
        WAKE_IF_SLEEPERS;
wdone:  skip
    } unless {
        crashed[s] -> d_step { ok = 0; rdy = 0; gu = 0; cleared = 0; vb = 0; rl = 0; anyr = 0 }
    };
    EXIT
}

#if CFG == 12
/* Configuration 12: slot 0 owns the block from the start (Owner = 1, set by init) and only releases it:
   ReleaseWrite (Exchange Owner 0; WakeIfSleepers). The cheapest third party that makes the two writers of line 1
   wait, so that one can refresh the line while the other waits (F4b), with a crash. */
proctype Holder(byte t; byte s) provided (cp == 0 || cp == pslot[_pid])
{
    bit vb;
    d_step { O = 0; GHOST };
    WAKE_IF_SLEEPERS;
    EXIT
}
#endif

/* RECOVERY after ScrubSlot(s): nothing of slot s (its byte: count and flag; Owner), and its line's Waiting bit is
   not left set with no flag on the line -- unless a live thread of the line is between clearing its own flag and the
   end of its RefreshWaiting (then that refresh decides). */
#define CLEAN(s) (R[s] == 0 && !WF[s] && (O & SLOTMASK) != s + 1 && \
                  ((W & LB(s)) == 0 || LINEFLAGS(LINE(s)) || inref[LINE(s)] > 0))

/* BrokerState.RemoveMember -> BlockLock.ScrubSlot(rec, s), once the process of slot s is dead. */
proctype Broker(byte s)
{
    byte x;
    bit any, vb, xf;
end_idle:
    crashed[s];
    /* its byte (count and wait flag): load the word; if the byte != 0, CAS it to 0 (slot is dead: nobody else
       writes it) */
    d_step { x = R[s]; xf = WF[s] };
    if
    :: x != 0 || xf -> d_step { assert(R[s] == x && WF[s] == xf); R[s] = 0; WF[s] = 0; any = 1; x = 0 }
    :: else -> skip
    fi;
    /* Owner: load; if it names s, CAS it to 0 (the torn mark is not modelled) */
    x = O;
    if
    :: (x & SLOTMASK) == s + 1 -> d_step { if :: O == x -> O = 0; GHOST :: else -> skip fi; any = 1; x = 0 }
    :: else -> x = 0
    fi;
    /* RefreshWaiting(its line), always: the process may have died between clearing its flag and clearing the bit.
       SCRUB_REFRESH_IF_FLAG (mutant): only when the dead slot's flag was set. NO_SCRUB_WAIT (mutant): never. */
#ifndef NO_SCRUB_WAIT
#ifdef SCRUB_REFRESH_IF_FLAG
    if :: xf -> d_step { inref[LINE(s)]++ }; REFRESH(LINE(s)); d_step { inref[LINE(s)]-- } :: else -> skip fi;
#else
    d_step { inref[LINE(s)]++ };
    REFRESH(LINE(s));
    d_step { inref[LINE(s)]--; DEAD_GAP_OUT(s) };           /* the dead slot's own refresh is over (WAITANN) */
#endif
#endif
    xf = 0;
#ifndef SCRUB_WAKE_IF_SLEEPERS
    any = 1;                                                /* the C# code since F2b: always WakeAllSleepers */
#endif
    if
    :: any -> d_step { SEQ_CHANGED; any = 0 }; FUTEX_WAKE    /* WakeAllSleepers: Add(Seq, 2) */
#ifdef SCRUB_WAKE_ONLY_IF_ANY
    :: else -> skip                                         /* old code (F2) */
#else
    :: else -> WAKE_IF_SLEEPERS_AT(NT + s)                  /* nothing released: WakeIfSleepers */
#endif
    fi;
    /* RECOVERY: after the scrub nothing names slot s (and nobody else can make it so later) */
    d_step { assert(CLEAN(s)); scrubbed[s] = 1 }
}

/* Kills a whole process (all threads of a slot) at any moment, MAXCRASH times in all. */
proctype Crasher()
{
    byte s;
    do
    :: ncrash < MAXCRASH ->
#ifdef CRASHSLOT
        s = CRASHSLOT;                                          /* only this slot may die */
#elif CFG == 12
        if :: !crashed[1] -> s = 1 :: !crashed[2] -> s = 2 fi; /* the Holder (slot 0) does not die */
#else
        if :: !crashed[0] -> s = 0 :: !crashed[1] -> s = 1 :: !crashed[2] -> s = 2 fi;
#endif
        d_step {
            crashed[s] = 1; ncrash++; lw[s] = 0; wa[s] = 0;
            if :: alive[s] > 0 -> cp = s + 1 :: else -> skip fi;
            /* the dead threads' holds no longer count as "in the critical section" */
            gi = 0;
            do
            :: gi < NT ->
                if
                :: slot_of[gi] == s ->
                    nr = nr - rd[gi]; rd[gi] = 0; nw = nw - wr[gi]; wr[gi] = 0;
                    blocked[gi] = 0; stale[gi] = 1; po[gi] = 0; pw[gi] = 0; pwo[gi] = 0; pwa[gi] = 0;
                    if :: rf[gi] -> rf[gi] = 0; inref[LINE(s)]-- :: else -> skip fi
                :: else -> skip
                fi;
                gi++
            :: else -> break
            od;
            if :: NOWA -> pwa[0] = 0; pwa[1] = 0; pwa[2] = 0 :: else -> skip fi;
            gi = 0; s = 0
        }
    :: break
    od
}

#ifdef FORGE
/* ---- forgery and repair (see FORGERY AND REPAIR in the header) ---- */

/* BlockLock.ClearUnowned under the broker's state lock and the ledger's gate, step by step. */
proctype Repairer()
{
    byte x, sl, tries, lv, wl;
    bit any, ok, xf;
end_r:
    do
    :: ask ->
#ifndef REPAIR_NO_GATE
        atomic { gate == 0 -> gate = 1; ask = 0; rbusy = 1 };
#else
        atomic { ask = 0; rbusy = 1 };
#endif
        atomic { lgate == 0 -> lgate = 1 };
        lv = LIVE;                                            /* the live set, judged once */
        /* Reader words. Only slot 2's byte: slot 0 is always live (its byte is never changed) and slot 1 has no
           thread and is never forged (its byte is always 0), so their loads change nothing and are left out. The
           count is lowered to what the slot may hold and the wait flag cleared if it may not wait, with one CAS
           from the word judged. */
        sl = 2;
        tries = 0;
        do
        :: d_step { x = R[sl]; xf = WF[sl] };                   /* load the word */
            if
            :: x > MAYREAD(sl) || (xf && !MAYWAIT2) ->          /* CAS from the value judged */
                d_step {
                    if
                    :: R[sl] == x && WF[sl] == xf ->
                        if :: x > MAYREAD(sl) -> R[sl] = MAYREAD(sl) :: else -> skip fi;
                        if :: xf && !MAYWAIT2 -> WF[sl] = 0; ff = 0 :: else -> skip fi;
                        any = 1; ok = 1
                    :: else -> ok = 0
                    fi
                };
                if :: ok || tries == 1 -> ok = 0; break :: else -> tries++ fi
            :: else -> break
            fi
        od;
        xf = 0;
        /* Waiting: one load of the word (the lines cleared are reported), then RefreshWaiting for every line of the
           record (since 02aea4c: also puts back a lost bit, F4b); REFRESH_SINGLE_PASS (the code before): only for
           the lines whose bit was set in that load */
        wl = W;
#ifndef REFRESH_SINGLE_PASS
        d_step { inref[0]++ }; REFRESH(0); d_step { inref[0]-- };
        d_step { inref[1]++ }; REFRESH(1); d_step { inref[1]-- };
#else
        if :: (wl & 1) -> d_step { inref[0]++ }; REFRESH(0); d_step { inref[0]-- } :: else -> skip fi;
        if :: (wl & 2) -> d_step { inref[1]++ }; REFRESH(1); d_step { inref[1]-- } :: else -> skip fi;
#endif
        d_step {                                                /* lines cleared: something changed (wake) */
            if :: (wl & ~W) != 0 -> any = 1 :: else -> skip fi;
            if :: (W & 2) == 0 -> fw = 0 :: else -> skip fi;
            wl = 0
        };
        x = O;                                                  /* Owner: load, judge, CAS from it */
        if
        :: x != 0 && !MAYOWN(x) -> d_step { if :: O == x -> O = 0; fo = 0; any = 1; GHOST :: else -> skip fi }
        :: else -> skip
        fi;
        if
        :: any -> d_step { SEQ_CHANGED; any = 0 }; FUTEX_WAKE   /* WakeAllSleepers */
        :: else -> skip
        fi;
        d_step { x = 0; sl = 0; tries = 0; lv = 0; lgate = 0; rbusy = 0 };
#ifndef REPAIR_NO_GATE
        gate = 0
#else
        skip
#endif
    od
}

/* A member process writing slot f's words while f has no member (never overwriting a live word). */
proctype Forger(byte f)
{
    do
    :: nforge < NFORGE ->
        if                                                      /* each write is one step, made while f is free */
#if CFG != 8
        :: d_step { !member[f] && R[f] < 2 -> R[f]++; nforge++ }   /* (CFG 8: the applier takes no reads) */
#endif
        :: d_step { !member[f] && O == 0 -> O = f + 1; fo = 1; nforge++; GHOST }
#if CFG != 9
        :: d_step { !member[f] && fo && O == f + 1 -> O = (f + 1) | ACT; nforge++; GHOST }
#endif
        :: d_step { !member[f] && fo -> O = 0; fo = 0; nforge++; GHOST }
        :: d_step { !member[f] && !WF[f] -> WF[f] = 1; ff = 1; nforge++ }       /* its wait flag */
        :: d_step { !member[f] && ff && WF[f] && lw[f] == 0 -> WF[f] = 0; ff = 0; nforge++ }
        :: d_step { !member[f] && (W & LB(f)) == 0 -> W = W | LB(f); fw = 1; nforge++; GHOST }   /* its line's bit */
#if CFG != 9
        :: d_step { !member[f] && fw && lw[f] == 0 -> W = W & ~LB(f); fw = 0; nforge++; GHOST }
#endif
        :: else -> break                                        /* slot f was given to a member, or nothing to do */
        fi
    :: break
    od;
    fdone = 1
}

#if CFG == 7
/* container_join of slot 2 (BrokerState.AddMember) under the broker's state lock: the slot's words are cleared in the
   record (what a forger left there while the slot was free), then the slot is given; T1 (slot 2's thread) starts
   once it holds. One step: the forger acts only while the slot is free, and a word it writes into the slot after the
   join names a live member (out of scope, see the header). With JOIN_NO_SCRUB the old AddMember: no clearing. */
proctype Joiner()
{
    atomic {
        gate == 0 ->
#ifndef JOIN_NO_SCRUB
        if
        :: R[2] != 0 || WF[2] || (O & SLOTMASK) == 3 || ((W & 2) != 0 && !WF[1]) -> SEQ_CHANGED; FUTEX_WAKE_ALL
        :: else -> skip
        fi;
        R[2] = 0; WF[2] = 0; ff = 0;
        if :: (O & SLOTMASK) == 3 -> O = 0; fo = 0 :: else -> skip fi;
        if :: !WF[1] -> W = W & ~2; fw = 0 :: else -> W = W | 2 fi;    /* RefreshWaiting(1): bit = line's flags */
        GHOST;
#endif
        member[2] = 1
    }
}
#endif

/* BrokerSlotLedger.AcquireWrite: BlockLock.TryClaimOwner under lgate (the CAS and owned = 1 in one critical
   section), or with CLAIM_OUTSIDE_GATE the CAS alone and the flag in a later step. */
#ifndef CLAIM_OUTSIDE_GATE
#define CLAIM atomic { lgate == 0 -> if :: O == 0 -> O = s + 1; owned = 1; ok = 1; GHOST :: else -> ok = 0 fi }
#else
#define CLAIM \
    d_step { if :: O == 0 -> O = s + 1; ok = 1; GHOST :: else -> ok = 0 fi }; \
    if :: ok -> atomic { lgate == 0 -> owned = 1 } :: else -> skip fi
#endif

/* The broker's applier: writes with the broker slot through the ledger (BrokerSlotLedger, BlockLock). */
proctype BWriter(byte t; byte s)
{
    byte rl;
    bit ok, rdy, gu, cleared, vb, anyr;
    CLAIM;
    if
    :: !ok ->
        /* under lgate: count, wait flag, line bit */
        atomic { lgate == 0 -> lgate = 1; lw[s]++; if :: lw[s] == 1 -> cleared = 1 :: else -> cleared = 0 fi };
        if
        :: cleared -> d_step { WF[s] = 1 }; d_step { W = W | LB(s); wa[s] = 1; cleared = 0; lgate = 0; GHOST }
        :: else -> lgate = 0
        fi;
        do
        :: CLAIM;
            if
            :: ok -> break
            :: else -> WAIT_FOR(PRED_OWNERFREE)
            fi
        od;
        /* under lgate: count, clear the flag, RefreshWaiting(its line) */
        atomic {
            lgate == 0 -> lgate = 1; lw[s]--;
            if :: lw[s] == 0 -> WF[s] = 0; wa[s] = 0; inref[LINE(s)]++; cleared = 1; GHOST :: else -> cleared = 0 fi
        };
        if
        :: cleared ->
            REFRESH(LINE(s));
            d_step { inref[LINE(s)]--; lgate = 0; cleared = 0 };
            WAKE_IF_SLEEPERS
        :: else -> lgate = 0
        fi
    :: else -> skip
    fi;
    ok = 0;
bdrain: skip;
    ANYREADERS;
    if
    :: anyr -> anyr = 0; WAIT_FOR(PRED_NOREADERS)
    :: else -> skip
    fi;
    d_step { O = O | ACT; GHOST };
    ANYREADERS;
    if
    :: anyr ->
        d_step { anyr = 0; O = O & ~ACT; GHOST };
        WAKE_IF_SLEEPERS;
        goto bdrain
    :: else -> skip
    fi;
    d_step { assert(nw == 0 && nr == 0); nw++; wr[t] = 1 };
    d_step { nw--; wr[t] = 0 };
    /* ReleaseWrite: the Owner store and owned = 0 in one critical section under lgate */
    atomic { lgate == 0 -> O = 0; owned = 0; GHOST };
    WAKE_IF_SLEEPERS;
    EXIT
}

/* The durable write-back: BrokerSlotLedger.TryAcquireReadFast (never waits), hold, ReleaseRead. */
proctype BReader(byte t; byte s)
{
    byte mine;
    bit ok, vb;
    atomic { lgate == 0 -> lreads++ };                          /* counted before the CAS */
    mine = R[s];
    if
    :: mine == 0 -> WP_BRANCH(goto bfail, skip)
    :: else -> if :: (O & ACT) != 0 -> goto bfail :: else -> skip fi
    fi;
#if !defined(NO_ANNOUNCE) && !defined(ANNOUNCE_AFTER_CAS)
    ANNOUNCE_LINE;
#endif
    d_step { if :: R[s] == mine -> R[s] = mine + 1; ok = 1 :: else -> ok = 0 fi };
#ifdef ANNOUNCE_AFTER_CAS
    if :: ok -> ANNOUNCE_LINE :: else -> skip fi;
#endif
    if :: !ok -> goto bfail :: else -> skip fi;
    if
    :: mine == 0 -> WP_BRANCH(goto bback, skip)
    :: else -> if :: (O & ACT) != 0 -> goto bback :: else -> skip fi
    fi;
    d_step { assert(nw == 0); nr++; rd[t]++; mine = 0 };
    d_step { nr--; rd[t]-- };
bback: skip;
    RELEASE_READ;
bfail: skip;
    atomic { lgate == 0 -> lreads-- };                          /* uncounted after the release */
    EXIT
}

/* REPAIRED: nothing is set for a slot without a live member */
#define REPAIRED \
    ((member[0] || R[0] == 0) && (member[1] || R[1] == 0) && (member[2] || R[2] == 0) && \
     (member[2] || !WF[2]) && !WF[1] && \
     (O == 0 || ((O & SLOTMASK) >= 1 && (O & SLOTMASK) <= NS && member[(O & SLOTMASK) - 1])) && \
     (W & ~FLAGLINES) == 0)
#endif

#ifdef CHECK_WAITANN
/* WAITANN: a writer that waits announced (flag set, its OR done) has its line's Waiting bit set, except while a
   RefreshWaiting of that line is between an And and its next Or or its return (GAP_IN / GAP_OUT; a dead refresher's
   until the scrub of its slot has refreshed). Checked in every reachable state. */
#define WAITANN(g) (!((g) == 0 -> wa[0] : (wa[1] || wa[2])) || (W & (1 << (g))) != 0 || gap[g] > 0)
proctype Monitor()
{
end_mon:
    atomic { !(WAITANN(0) && WAITANN(1)) -> assert(WAITANN(0) && WAITANN(1)) }
}
#endif

init {
    atomic {
        stale[0] = 1; stale[1] = 1; stale[2] = 1; stale[3] = 1; stale[4] = 1; stale[5] = 1;
#if CFG == 1
        slot_of[0] = 0; slot_of[1] = 1; slot_of[2] = 2; alive[0] = 1; alive[1] = 1; alive[2] = 1;
        run Reader(0, 0, 2);
        run Writer(1, 1);
        run Writer(2, 2);
#elif CFG == 2
        slot_of[0] = 0; slot_of[1] = 0; slot_of[2] = 1; alive[0] = 2; alive[1] = 1;
        run Reader(0, 0, 1);
        run Writer(1, 0);
        run Writer(2, 1);
#elif CFG == 3
        slot_of[0] = 0; slot_of[1] = 0; slot_of[2] = 1; alive[0] = 2; alive[1] = 1;
        run Reader(0, 0, 1);
        run Reader(1, 0, 1);
        run Writer(2, 1);
#elif CFG == 4
        slot_of[0] = 0; slot_of[1] = 1; slot_of[2] = 2; alive[0] = 1; alive[1] = 1;
        run Reader(0, 0, 2);
        run Writer(1, 1);
#elif CFG == 5
        slot_of[0] = 0; slot_of[1] = 1; slot_of[2] = 2; alive[0] = 1; alive[1] = 1;
        run Writer(0, 0);
        run Writer(1, 1);
#elif CFG == 6
        slot_of[0] = 0; slot_of[1] = 0; slot_of[2] = 2; alive[0] = 2;
        run Reader(0, 0, 1);
        run Writer(1, 0);
#elif CFG == 10
        slot_of[0] = 0; slot_of[1] = 1; slot_of[2] = 2; alive[0] = 1; alive[1] = 1; alive[2] = 1;
        run Writer(0, 0);
        run Writer(1, 1);
        run Writer(2, 2);
#elif CFG == 11
        slot_of[0] = 1; slot_of[1] = 2; slot_of[2] = 0; alive[1] = 1; alive[2] = 1;
        run Writer(0, 1);
        run Writer(1, 2);
#elif CFG == 12
        slot_of[0] = 0; slot_of[1] = 1; slot_of[2] = 2; alive[0] = 1; alive[1] = 1; alive[2] = 1;
        O = 1;
        run Holder(0, 0);
        run Writer(1, 1);
        run Writer(2, 2);
#elif CFG == 7 && defined(FORGE)
        slot_of[0] = 0; slot_of[1] = 2; slot_of[2] = 1; alive[0] = 1; alive[2] = 1; member[0] = 1;
        run Writer(0, 0);
        run Reader(1, 2, 1);
#elif CFG == 8 && defined(FORGE)
        slot_of[0] = 0; slot_of[1] = 2; slot_of[2] = 1; alive[0] = 1; alive[2] = 1; member[0] = 1;
        run Writer(0, 0);
        run BWriter(1, 2);
#elif CFG == 9 && defined(FORGE)
        slot_of[0] = 0; slot_of[1] = 2; slot_of[2] = 1; alive[0] = 1; alive[2] = 1; member[0] = 1;
        run Writer(0, 0);
        run BReader(1, 2);
#endif
        pslot[1] = slot_of[0] + 1; pslot[2] = slot_of[1] + 1; pslot[3] = slot_of[2] + 1;
#ifdef FORGE
        run Forger(2); run Repairer();
#if CFG == 7
        run Joiner();
#endif
#else
        run Broker(0); run Broker(1); run Broker(2);
        run Crasher()
#endif
#ifdef CHECK_WAITANN
        ; run Monitor()
#endif
    };
    alldone;
#ifdef FORGE
    /* the last check, after the forger stopped: nothing may stay set for a slot without a live member */
    fdone;
    ask = 1;
    ask == 0 && !rbusy;
    assert(REPAIRED)
#else
    /* everything released, by the threads themselves or by recovery */
    assert(R[0] == 0 && R[1] == 0 && R[2] == 0 && !WF[0] && !WF[1] && !WF[2] && O == 0);
#ifndef NO_END_W
    assert(W == 0)            /* no flag is set: a Waiting bit left here would keep every new reader out for good */
#else
    skip                      /* NO_END_W: to let a check reach WAITANN past a stale bit (F4b with the old code) */
#endif
#endif
}

ltl live { <> alldone }
