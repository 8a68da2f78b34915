/*
 * object_get and object_put of libsharedstore.so, in C (docs/ARCHITECTURE.md §12.1, issue 15).
 *
 * Why C: every call into the NativeAOT runtime crosses a reverse P/Invoke transition (GC mode switch, thread
 * lookup), and two of them cost about as much as a whole pthread rwlock read pair here (c-get-put-1block). A
 * one-block get whose block is free, and every put, therefore run here without entering the runtime; everything else
 * (a wait, a range over several blocks, any error and its message) is handed to the managed half, which does what it
 * always did: ssn_get_slow and ssn_put_error in Exports/FastPathExports.cs.
 *
 * What is implemented twice, and how the two are kept equal. The reader's side of the block lock (try once, release,
 * wake) is the protocol of BlockLock.TryAcquireReadFast and BlockLock.ReleaseRead in SharedStore.Core, step for step:
 * the same words, the same order of loads and locked instructions (argued in BlockLock's class comment and checked by
 * the spin model, model/blocklock.pml, which models the protocol and not either language). FastPathLayoutTests pins
 * fastpath.h's offsets against BlockLockDescriptor and FastPath, and the Native tests run the C reader against C# writers
 * (exclusion, writer priority, kill -9 recovery of a C process's holds).
 *
 * The leases (operation ids of gets) live in a table this file owns (ss_tables.leases, allocated by the managed half
 * so that a close can scan it). A lease's life:
 *   FREE --rent (thread cache)--> ANNOUNCED --lock taken--> id --put's CAS--> PUTTING --locks released--> FREE
 *                                      \--get failed: withdrawn--> FREE
 * The announcement is what a close of the object looks for (ObjectHandle in Handles/Handle.cs): the get stores
 * ANNOUNCED with the object's index, and only then loads the object entry's id; the close hides the entry's id (-1),
 * runs a process-wide barrier (membarrier), and scans the leases. Either the scan sees the announcement (the close
 * fails with Busy) or the get's load sees -1 or a later id (the get goes to the managed half, which says NotFound),
 * so a close never unmaps an object under a get or a lease. The entry's fields are read only after that second load
 * found the id still live, and they do not change while it is: the entry is rewritten for a new object only after
 * the close that hid it succeeded, which it cannot while this get is announced.
 *
 * The put claims the lease with one CAS from its id to PUTTING (two threads putting one id: one wins, the other gets
 * NotFound), releases the blocks (and wakes their sleepers), bumps the generation (the old id is dead) and frees the
 * slot; the close scan sees the id or PUTTING until the releases and wakes are done.
 *
 * Shape of the code, for speed (c-get-put-1block): the get's and the put's common case is one straight-line function
 * with no call but tail calls to cold, out-of-line functions (so the put saves no registers); the first test of a get
 * turns away, before anything is written, everything the fast path does not handle (no tables yet, an empty cache, a
 * negative id, a NULL buf: get_general); the thread's lease cache is one initial-exec thread-local (a load at a fixed
 * %fs offset); the tables' pointers are copied into statics once; the leases are cache-line aligned.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fastpath.h"

#define EXPORT __attribute__((visibility("default")))

/* The managed half (UnmanagedCallersOnly exports of this same image). */
extern struct ss_tables *ssn_fast_tables(void);
extern int32_t ssn_get_slow(int32_t object_id, size_t offset, size_t size, uint8_t **buf, int32_t timeout_ms,
                            int32_t have_lease, int32_t *slot, uint8_t **first, int32_t *count, int32_t *record_size);
extern int32_t ssn_put_error(int32_t op);

_Static_assert(sizeof(struct ss_object_entry) == 64, "ss_object_entry is 64 bytes");
_Static_assert(offsetof(struct ss_object_entry, lost) == 32, "ss_object_entry.lost at 32");
_Static_assert(offsetof(struct ss_object_entry, record_size) == 40, "ss_object_entry.record_size at 40");
_Static_assert(sizeof(struct ss_lease) == 32, "ss_lease is 32 bytes");
_Static_assert(offsetof(struct ss_lease, first) == 16, "ss_lease.first at 16");
_Static_assert(offsetof(struct ss_tables, lease_high_water) == 16, "ss_tables.lease_high_water at 16");

/* The hot path is one straight function per call (no calls, few registers); everything rare is out of line. */
#define INLINE inline __attribute__((always_inline))
#define COLD __attribute__((cold, noinline))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ---- The block lock, reader side (BlockLock.TryAcquireReadFast / ReleaseRead) ---------------------------------- */

static INLINE uint32_t *rec_owner(uint8_t *rec) { return (uint32_t *)(rec + SS_REC_OWNER); }
static INLINE uint64_t *rec_waiting(uint8_t *rec) { return (uint64_t *)(rec + SS_REC_WAITING); }
static INLINE int32_t *rec_seq(uint8_t *rec) { return (int32_t *)(rec + SS_REC_SEQ); }
static INLINE uint64_t *rec_reader_lines(uint8_t *rec) { return (uint64_t *)(rec + SS_REC_READER_LINES); }
static INLINE uint64_t *reader_word(uint8_t *rec, int32_t slot) { return (uint64_t *)(rec + SS_REC_READERS) + (slot >> 3); }

static INLINE int writer_present(uint8_t *rec)
{
    uint64_t owner = LOAD(rec_owner(rec)); /* Owner first, then Waiting, as BlockLock.WriterPresent */
    return (owner | LOAD(rec_waiting(rec))) != 0;
}
static INLINE int writer_active(uint8_t *rec) { return (LOAD(rec_owner(rec)) & SS_OWNER_ACTIVE) != 0; }

/* Bumps Seq and wakes every sleeper if bit 0 says there may be any (BlockLock.WakeIfSleepers). The caller has just
 * made a locked RMW on the state, which orders this load after its change. */
static COLD void wake(uint8_t *rec, int32_t seen)
{
    int32_t expected = seen;
    __atomic_compare_exchange_n(rec_seq(rec), &expected, (seen + 1) & ~SS_SEQ_SLEEPERS, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_RELAXED);
    syscall(SYS_futex, rec_seq(rec), FUTEX_WAKE, INT_MAX, NULL, NULL, 0); /* shared futex: other processes wait */
}

/* ReleaseRead up to its wake: the hold given back, then Seq loaded. Returns the Seq seen if it says there may be
 * sleepers (the caller then calls wake before anything else), else 0. Split so that the hot put's only calls are tail
 * calls (no register saves on its path). */
static INLINE int32_t release_read_nowake(uint8_t *rec, int32_t slot)
{
    uint64_t *word = reader_word(rec, slot);
    int shift = (slot & 7) << 3;
    uint64_t old = LOAD(word);
    for (;;) {
        /* CAS, not a subtract: a count already 0 (a misuse race) must not borrow from the neighbouring slot's byte. */
        if (UNLIKELY(((old >> shift) & SS_MAX_HOLDS) == 0))
            return 0;
        if (LIKELY(__atomic_compare_exchange_n(word, &old, old - (1ull << shift), 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)))
            break;
    }
    int32_t seen = LOAD(rec_seq(rec));
    return seen & SS_SEQ_SLEEPERS ? seen : 0;
}

static void release_read(uint8_t *rec, int32_t slot)
{
    int32_t seen = release_read_nowake(rec, slot);
    if (seen != 0)
        wake(rec, seen);
}

/* Reader steps 0-3 once, without waiting: 1 if the hold is taken; 0 if not (a writer is present, the CAS met
 * contention, or the slot's count is saturated); -1 if it was taken but a writer came between steps 1 and 3, so the
 * caller must give it back (release_read). */
static INLINE int try_read_fast(uint8_t *rec, int32_t slot)
{
    uint64_t *word = reader_word(rec, slot);
    int shift = (slot & 7) << 3;
    uint64_t old = LOAD(word);
    uint32_t mine = (uint32_t)(old >> shift) & SS_MAX_HOLDS;
    if (LIKELY(mine == 0) ? UNLIKELY(writer_present(rec)) : (mine == SS_MAX_HOLDS || writer_active(rec)))
        return 0;

    /* Step 0, before every increment (spin model F5): the line's ReaderLines bit; a load that finds it set suffices
     * because it is never cleared while the record is in use. */
    uint64_t line = 1ull << (slot >> 6);
    if (UNLIKELY((LOAD(rec_reader_lines(rec)) & line) == 0))
        __atomic_fetch_or(rec_reader_lines(rec), line, __ATOMIC_SEQ_CST);

    /* Step 2; the locked CAS is a full fence, so step 3's loads come after it. */
    if (UNLIKELY(!__atomic_compare_exchange_n(word, &old, old + (1ull << shift), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)))
        return 0;

    /* Step 3: Dekker re-check against a writer that announced itself after step 1. */
    if (UNLIKELY(mine == 0 ? writer_present(rec) : writer_active(rec)))
        return -1;
    return 1;
}

/* ---- The tables and the per-thread lease cache ---------------------------------------------------------------- */

#define CACHE_CAPACITY 64
#define CACHE_BATCH (CACHE_CAPACITY / 2)

/* A ring, taken from the head and given back at the tail, so that a thread that gets and puts in a loop cycles
 * through every index it caches instead of reusing the one it just freed: an index's generation (13 bits) then wraps
 * after 8192 x (leases in the cache) pairs, not after 8192, and a stale id stays dead that much longer. */
struct lease_cache {
    int32_t head;
    int32_t count;
    int32_t limit;      /* a give-back at this count goes to spill: 0 until the first refill or spill, then the capacity */
    int32_t registered; /* the pthread key's destructor will give this thread's indexes back */
    int32_t index[CACHE_CAPACITY];
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
/* The tables' two pointers (which never change), published by init_once with g_leases last. */
static struct ss_lease *g_leases;
static struct ss_object_entry **g_chunks;
static struct ss_tables *g_tables;
static pthread_mutex_t g_gate = PTHREAD_MUTEX_INITIALIZER; /* the free list and the high water */
static int32_t *g_free;
static int32_t g_free_count;
static pthread_key_t g_thread_key;
static int g_thread_key_made;
/* initial-exec: a get or put finds its cache at a fixed offset from %fs, with no TLS descriptor call. The whole TLS
 * block of the library then lives in static TLS, also when it is dlopen'ed (docs/ARCHITECTURE.md §12.1 says why that
 * is safe). */
static __thread struct lease_cache t_cache __attribute__((tls_model("initial-exec")));

static INLINE int32_t cache_take(struct lease_cache *c)
{
    int32_t index = c->index[c->head];
    c->head = (c->head + 1) & (CACHE_CAPACITY - 1);
    c->count--;
    return index;
}

static INLINE void cache_add(struct lease_cache *c, int32_t index)
{
    c->index[(c->head + c->count) & (CACHE_CAPACITY - 1)] = index;
    c->count++;
}

/* A thread that exits gives its cached leases back (they are free slots; nothing is held in them). Runs on the
 * exiting thread, so c is that thread's cache: a later get or put of the same thread (another key's destructor)
 * registers again. */
static void give_back_cache(void *p)
{
    struct lease_cache *c = p;
    pthread_mutex_lock(&g_gate);
    while (c->count > 0)
        g_free[g_free_count++] = cache_take(c);
    pthread_mutex_unlock(&g_gate);
    c->registered = 0;
    c->limit = 0;
}

/* Before a thread's cache first holds an index (a get's refill, or a put by a thread that never got): so that its
 * exit gives the indexes back. */
static void register_cache(struct lease_cache *c)
{
    if (!c->registered && g_thread_key_made && pthread_setspecific(g_thread_key, c) == 0)
        c->registered = 1;
    c->limit = CACHE_CAPACITY;
}

static void init_once(void)
{
    int32_t *free_list = malloc(sizeof(int32_t) * SS_LEASE_CAPACITY);
    if (free_list == NULL)
        return;
    g_thread_key_made = pthread_key_create(&g_thread_key, give_back_cache) == 0;
    g_free = free_list;
    struct ss_tables *t = ssn_fast_tables(); /* NULL if the managed half could not allocate them: every get is then
                                                NO_RESOURCES (from the managed half) and every put NOT_FOUND */
    if (t == NULL)
        return;
    g_chunks = t->entry_chunks;
    g_tables = t;
    STORE(&g_leases, t->leases); /* last: a get that loads it non-NULL sees the others */
}

/* The cache is empty: take a batch from the free list, or fresh leases from the high water. -1 when all
 * SS_LEASE_CAPACITY are out. */
static int32_t refill(struct lease_cache *c)
{
    struct ss_tables *t = g_tables;
    register_cache(c);
    pthread_mutex_lock(&g_gate);
    while (c->count < CACHE_BATCH && g_free_count > 0)
        cache_add(c, g_free[--g_free_count]);
    while (c->count < CACHE_BATCH && t->lease_high_water < SS_LEASE_CAPACITY) {
        cache_add(c, t->lease_high_water);
        STORE(&t->lease_high_water, t->lease_high_water + 1); /* the close scan reads it without the gate */
    }
    pthread_mutex_unlock(&g_gate);
    return c->count == 0 ? -1 : cache_take(c);
}

/* A give-back found the cache at its limit: register it (the thread's first), or spill the oldest half. */
static COLD void spill(struct lease_cache *c)
{
    register_cache(c);
    if (c->count < CACHE_CAPACITY)
        return;
    pthread_mutex_lock(&g_gate);
    while (c->count > CACHE_BATCH)
        g_free[g_free_count++] = cache_take(c); /* the oldest: the ring keeps rotating through the newer ones */
    pthread_mutex_unlock(&g_gate);
}

static COLD void spill_and_add(struct lease_cache *c, int32_t index)
{
    spill(c);
    cache_add(c, index);
}

static INLINE void give_back(int32_t index)
{
    struct lease_cache *c = &t_cache;
    if (UNLIKELY(c->count >= c->limit))
        spill_and_add(c, index); /* a tail call where give_back is last */
    else
        cache_add(c, index);
}

/* ---- object_get / object_put ---------------------------------------------------------------------------------- */

static INLINE int32_t publish(struct ss_lease *l, int32_t index)
{
    int32_t id = (l->generation << SS_INDEX_BITS) | (SS_LEASE_BASE + index);
    STORE(&l->state, id); /* release: the lease's fields are visible with its id */
    return id;
}

/* Stores the announcement a close scans for; object_index is -1 for a negative id. */
static INLINE void announce(struct ss_lease *l, int32_t object_index)
{
    l->object = object_index;
    STORE(&l->state, SS_LEASE_ANNOUNCED);
    /* The announcement must not sink below the entry's load (the close's membarrier covers the CPU; this covers the
     * compiler, which may otherwise move a release store after a later acquire load). */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* The get is announced in lease index but the fast path cannot take it: the managed half checks, waits and reports,
 * as it always did. */
static COLD int32_t get_announced_slow(int32_t index, int32_t object_id, size_t offset, size_t size, uint8_t **buf,
                                       int32_t timeout_ms)
{
    struct ss_lease *l = &g_leases[index];
    int32_t slot = 0, count = 0, record_size = 0;
    uint8_t *first = NULL;
    int32_t r = ssn_get_slow(object_id, offset, size, buf, timeout_ms, 1, &slot, &first, &count, &record_size);
    if (r < 0) {
        STORE(&l->state, SS_LEASE_FREE);
        give_back(index);
        return r;
    }
    l->slot = slot;
    l->first = first;
    l->count = count;
    l->record_size = record_size;
    return publish(l, index);
}

/* The fast path took the block's hold but a writer came (try_read_fast's -1): give it back (the block is in the
 * lease), then as get_announced_slow. */
static COLD int32_t get_undo_slow(int32_t index, int32_t object_id, size_t offset, size_t size, uint8_t **buf,
                                  int32_t timeout_ms)
{
    struct ss_lease *l = &g_leases[index];
    release_read(l->first, l->slot);
    return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
}

/* Announced in lease index (a live id, buf not NULL): the fast path if the entry is live, the range inside one block
 * and the block free of writers; the managed half otherwise. */
static INLINE int32_t get_announced(struct ss_lease *l, int32_t index, int32_t object_id, size_t offset, size_t size,
                                    uint8_t **buf, int32_t timeout_ms)
{
    int32_t object_index = object_id & ((1 << SS_INDEX_BITS) - 1);
    struct ss_object_entry *chunk = LOAD(&g_chunks[object_index >> SS_ENTRY_CHUNK_BITS]);
    if (UNLIKELY(chunk == NULL))
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    struct ss_object_entry *e = &chunk[object_index & ((1 << SS_ENTRY_CHUNK_BITS) - 1)];
    if (UNLIKELY(LOAD(&e->id) != object_id)) /* only now are e's fields this object's (the file comment) */
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    if (UNLIKELY((LOAD(e->lost) | LOAD(e->closed)) != 0))
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    uint64_t osize = e->size;
    int shift = e->block_shift;
    /* Inside the object, not empty (size - 1 wraps for 0), and first and last byte in one block. */
    if (UNLIKELY(offset >= osize || size - 1 >= osize - offset || ((offset ^ (offset + size - 1)) >> shift) != 0))
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    int32_t slot = e->slot, record_size = e->record_size;
    uint8_t *rec = e->records + (size_t)(offset >> shift) * (size_t)record_size;
    l->slot = slot;
    l->first = rec;
    l->count = 1;
    l->record_size = record_size;
    int taken = try_read_fast(rec, slot);
    if (UNLIKELY(taken <= 0)) {
        if (taken < 0)
            return get_undo_slow(index, object_id, offset, size, buf, timeout_ms);
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    }
    *buf = e->data + offset;
    return publish(l, index);
}

/* Every get the fast path's first test turns away: before the first call (no tables yet), an empty cache, a negative
 * id, a NULL buf. */
static COLD int32_t get_general(int32_t object_id, size_t offset, size_t size, uint8_t **buf, int32_t timeout_ms)
{
    if (LOAD(&g_leases) == NULL)
        pthread_once(&g_once, init_once);
    struct lease_cache *c = &t_cache;
    int32_t index = LOAD(&g_leases) == NULL ? -1 : c->count > 0 ? cache_take(c) : refill(c);
    if (index < 0) /* no tables, or every lease is out: the managed half reports NoResources after its other checks */
        return ssn_get_slow(object_id, offset, size, buf, timeout_ms, 0, NULL, NULL, NULL, NULL);
    struct ss_lease *l = &g_leases[index];
    announce(l, object_id < 0 ? -1 : (object_id & ((1 << SS_INDEX_BITS) - 1)));
    if (object_id < 0 || buf == NULL)
        return get_announced_slow(index, object_id, offset, size, buf, timeout_ms);
    return get_announced(l, index, object_id, offset, size, buf, timeout_ms);
}

static INLINE int32_t get_core(int32_t object_id, size_t offset, size_t size, uint8_t **buf, int32_t timeout_ms)
{
    struct ss_lease *leases = LOAD(&g_leases);
    struct lease_cache *c = &t_cache;
    if (UNLIKELY(leases == NULL || c->count <= 0 || object_id < 0 || buf == NULL))
        return get_general(object_id, offset, size, buf, timeout_ms);
    int32_t index = cache_take(c);
    struct ss_lease *l = &leases[index];
    announce(l, object_id & ((1 << SS_INDEX_BITS) - 1));
    return get_announced(l, index, object_id, offset, size, buf, timeout_ms);
}

EXPORT int object_get(int object_id, size_t offset, size_t size, char **buf)
{
    return get_core(object_id, offset, size, (uint8_t **)buf, -1);
}

EXPORT int object_get_timed(int object_id, size_t offset, size_t size, char **buf, int timeout_ms)
{
    return get_core(object_id, offset, size, (uint8_t **)buf, timeout_ms);
}

/* Not a lease id: NotFound, or InvalidArgument for an asynchronous operation; or a lease this thread cannot claim:
 * never got, already put, or being put by another thread. */
static COLD int put_error(int op)
{
    return ssn_put_error(op);
}

/* The claimed lease's blocks are released: kill its id and free it. */
static INLINE int put_finish(struct ss_lease *l, int32_t index)
{
    l->generation = (l->generation + 1) & SS_GENERATION_MASK;
    STORE(&l->state, SS_LEASE_FREE);
    give_back(index);
    return 0;
}

/* A claimed lease of several blocks (or none: an empty range the managed half took). */
static COLD int put_all(struct ss_lease *l, int32_t index)
{
    for (int32_t k = 0; k < l->count; k++)
        release_read(l->first + (size_t)k * (size_t)l->record_size, l->slot);
    return put_finish(l, index);
}

/* The one-block release found sleepers to wake: wake them, then finish (before FREE: the close scan's argument). */
static COLD int put_wake(struct ss_lease *l, int32_t index, int32_t seen)
{
    wake(l->first, seen);
    return put_finish(l, index);
}

EXPORT int object_put(int op)
{
    /* g_leases is NULL only before this process's first get: then no lease id exists. */
    struct ss_lease *leases = LOAD(&g_leases);
    if (UNLIKELY(op < 0 || (op & SS_LEASE_BASE) == 0 || leases == NULL))
        return put_error(op);
    int32_t index = op & (SS_LEASE_CAPACITY - 1);
    struct ss_lease *l = &leases[index];
    int32_t expected = op;
    if (UNLIKELY(!__atomic_compare_exchange_n(&l->state, &expected, SS_LEASE_PUTTING, 0, __ATOMIC_SEQ_CST,
                                              __ATOMIC_RELAXED)))
        return put_error(op);

    if (UNLIKELY(l->count != 1))
        return put_all(l, index);
    int32_t seen = release_read_nowake(l->first, l->slot);
    if (UNLIKELY(seen != 0))
        return put_wake(l, index, seen);
    return put_finish(l, index);
}
