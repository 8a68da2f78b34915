/*
 * The object version protocol (src/SharedStore.Core/Locks/ObjectVersion.cs; docs/ARCHITECTURE.md §4.1; docs/MODEL.md,
 * "Object versions"). One object of one block: its version word (version << 1 | sleepers bit), the block's
 * BlockVersion, the block's write lock (an abstract mutex: the block lock itself is blocklock.pml's subject), NW writers
 * that each make one write, and one waiter that waits ROUNDS times for a change (WaitForChange), sleeping on the word.
 *
 * Writer (SharedObject.Write; the applier and the restore use the same ObjectVersion calls), one atomic step a line:
 *   lock; BlockVersion = Pending (BeginWrite); copy (two steps: started, done); locked add of 2 to the word, keeping
 *   its result (Publish); BlockVersion = the new version (Publish); unlock; if the add's result had the bit: And
 *   clearing it, then FUTEX_WAKE (WakeIfSleepers / WakeAll).
 * Waiter (WaitForChange after its spin phase, which is a load of the word like the first step here):
 *   load the word; if the version differs from the last seen, return it; if the bit is clear, CAS it on from exactly
 *   the value seen (a failed CAS looks again); FUTEX_WAIT on the value with the bit (atomic "if the word still equals
 *   it, queue"); when woken (or the value differed), look again.
 * Reader (Version, ChangedBlocksSince): load the version v; check that the data of v is in place (copies completed
 *   >= v); load the BlockVersion b; check b is Pending or >= v (the one block is in every write).
 * Crash (-DMAXCRASH=n): any writer or the waiter may die between any two steps (`unless`); the broker then releases a
 *   dead writer's lock (its BlockVersion stays as the writer left it: Pending from its first step on, and the data
 *   "torn" while a copy was started and not done).
 * Lost wake-up check, when nothing can move any more (`timeout`): the waiter is not asleep on the word while the
 *   version differs from what it last saw, unless a writer died after its add with the bit seen and before its
 *   FUTEX_WAKE (the code's 50 ms sleep slice ends that sleep; ObjectVersion's comment, finding V1 of docs/MODEL.md).
 *
 * Mutants (must fail): -DMUT_NO_WAKE (the writer never wakes), -DMUT_NO_CAS (the waiter sleeps without setting the
 * bit), -DMUT_WAKE_BEFORE_CLEAR (FUTEX_WAKE before the And), -DMUT_ADD_BEFORE_COPY (publish before the copy),
 * -DMUT_NO_PENDING (no BeginWrite).
 */

#ifndef NW
#define NW 2
#endif
#ifndef ROUNDS
#define ROUNDS 2
#endif
#ifndef MAXCRASH
#define MAXCRASH 0
#endif

#define PENDING 255

byte ver = 0;          /* the version word's version */
bit sbit = 0;          /* the version word's bit 0: sleepers */
byte bv = 0;           /* BlockVersion of the block */
byte lk = 0;           /* the block's write lock: 0 free, else writer id + 1 */
byte copied = 0;       /* copies completed (the data of versions 1..copied is in place) */
bit torn = 0;          /* a copy started and not done (by a writer that may have died) */
bit asleep = 0;        /* the waiter is queued in FUTEX_WAIT on the word */
byte seen = 0;         /* the version the waiter saw last */
byte lastAdder = 0;    /* writer id + 1 of the last add */
bit wakeOwed[NW];      /* writer i added with the bit set and has not done its wake yet */
bit died[NW + 1];      /* writers 0..NW-1, the waiter NW */
byte crashes = 0;
byte wdone = 0;        /* writers that finished or died */

inline futex_wake_all() {
    asleep = 0
}

proctype Writer(byte i) {
    byte r_ver;
    bit r_bit;
    {
        atomic { lk == 0 -> lk = i + 1 };
#ifndef MUT_NO_PENDING
        bv = PENDING;
#endif
#ifdef MUT_ADD_BEFORE_COPY
        atomic { ver++; r_ver = ver; r_bit = sbit; lastAdder = i + 1; wakeOwed[i] = r_bit };
        torn = 1;
        atomic { copied++; torn = 0 };
#else
        torn = 1;
        atomic { copied++; torn = 0 };
        atomic { ver++; r_ver = ver; r_bit = sbit; lastAdder = i + 1; wakeOwed[i] = r_bit };
#endif
        bv = r_ver;
        lk = 0;
        if
        :: r_bit ->
#if defined(MUT_NO_WAKE)
            skip;
#elif defined(MUT_WAKE_BEFORE_CLEAR)
            futex_wake_all();
            sbit = 0;
#else
            sbit = 0;
            futex_wake_all();
#endif
        :: else -> skip
        fi;
        wakeOwed[i] = 0;
        wdone++
    } unless { died[i] };
    if
    :: died[i] ->
        /* the broker's recovery of the dead writer: its lock is released; BlockVersion and data stay as left */
        atomic { if :: lk == i + 1 -> lk = 0 :: else -> skip fi; wdone++ }
    :: else -> skip
    fi
}

proctype Waiter() {
    byte w_ver;
    bit w_bit;
    byte n = 0;
    {
        do
        :: n == ROUNDS -> break
        :: else ->
            atomic { w_ver = ver; w_bit = sbit };
            if
            :: w_ver != seen ->
                seen = w_ver;
                n++
            :: else ->
#ifndef MUT_NO_CAS
                if
                :: w_bit == 0 ->
                    atomic {
                        if
                        :: ver == w_ver && sbit == 0 -> sbit = 1; w_bit = 1
                        :: else -> skip   /* the CAS failed: w_bit stays 0, the wait below finds another value */
                        fi
                    }
                :: else -> skip
                fi;
#endif
                /* FUTEX_WAIT on (w_ver << 1) | w_bit: queued only if the word still equals it */
                atomic {
                    if
                    :: ver == w_ver && sbit == w_bit -> asleep = 1
                    :: else -> skip
                    fi
                };
end_sleep:
                asleep == 0
            fi
        od
    } unless { died[NW] };
    if :: died[NW] -> asleep = 0 :: else -> skip fi   /* a dead waiter is not queued (it may leave the bit) */
}

/* Readers of the version (obj.Version, ChangedBlocksSince): the properties "a version seen never claims data that is
 * not in place" and "a block changed by a write of version v reads >= v or Pending after that write's add". */
proctype Reader() {
    byte v, b, v2;
    v = ver;
    assert(copied >= v);
    b = bv;
    assert(b == PENDING || b >= v);
    v2 = ver;
    assert(v2 >= v);
    v = 0; b = 0; v2 = 0   /* dead locals out of the state */
}

proctype Crasher() {
    byte k;
    do
    :: crashes < MAXCRASH ->
        if
        :: k = 0
        :: k = 1
#if NW > 2
        :: k = 2
#endif
        :: k = NW
        fi;
        if
        :: k <= NW && !died[k] -> atomic { died[k] = 1; crashes++ }
        :: else -> skip
        fi
    :: true -> break
    od
}

/* When nothing can move: no waiter left asleep although the version changed, except after a writer killed after its
 * add and before its FUTEX_WAKE (excused: the code's 50 ms sleep slice ends that sleep). -DNEXT_WRITER_WAKES checks
 * the narrower excuse the code's comment first claimed (only the last writer's death, as "the next writer wakes
 * everyone anyway"): it fails, finding V1 (docs/MODEL.md). */
proctype Check() {
    byte j;
    bit excused = 0;
    timeout ->
    atomic {
#ifdef NEXT_WRITER_WAKES
        excused = (lastAdder > 0 && died[lastAdder - 1] && wakeOwed[lastAdder - 1]);
#else
        j = 0;
        do
        :: j < NW -> if :: died[j] && wakeOwed[j] -> excused = 1 :: else -> skip fi; j++
        :: else -> break
        od;
#endif
        assert(!(asleep && ver != seen) || excused)
    }
}

init {
    atomic {
        byte i = 0;
        do
        :: i < NW -> run Writer(i); i++
        :: else -> break
        od;
        run Waiter();
        run Reader();
        run Crasher();
        run Check()
    }
}
