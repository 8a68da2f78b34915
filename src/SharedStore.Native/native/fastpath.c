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
 * NotFound), releases the blocks, bumps the generation (the old id is dead) and frees the slot; the close scan sees
 * the id or PUTTING until the releases are done.
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

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ---- The block lock, reader side (BlockLock.TryAcquireReadFast / ReleaseRead) ---------------------------------- */

static inline uint32_t *rec_owner(uint8_t *rec) { return (uint32_t *)(rec + SS_REC_OWNER); }
static inline uint64_t *rec_waiting(uint8_t *rec) { return (uint64_t *)(rec + SS_REC_WAITING); }
static inline int32_t *rec_seq(uint8_t *rec) { return (int32_t *)(rec + SS_REC_SEQ); }
static inline uint64_t *rec_reader_lines(uint8_t *rec) { return (uint64_t *)(rec + SS_REC_READER_LINES); }
static inline uint64_t *reader_word(uint8_t *rec, int32_t slot) { return (uint64_t *)(rec + SS_REC_READERS) + (slot >> 3); }

static inline int writer_present(uint8_t *rec)
{
    uint64_t owner = LOAD(rec_owner(rec)); /* Owner first, then Waiting, as BlockLock.WriterPresent */
    return (owner | LOAD(rec_waiting(rec))) != 0;
}
static inline int writer_active(uint8_t *rec) { return (LOAD(rec_owner(rec)) & SS_OWNER_ACTIVE) != 0; }

/* Bumps Seq and wakes every sleeper if bit 0 says there may be any (BlockLock.WakeIfSleepers). The caller has just
 * made a locked RMW on the state, which orders this load after its change. */
static inline void wake_if_sleepers(uint8_t *rec)
{
    int32_t seen = LOAD(rec_seq(rec));
    if (seen & SS_SEQ_SLEEPERS) {
        int32_t expected = seen;
        __atomic_compare_exchange_n(rec_seq(rec), &expected, (seen + 1) & ~SS_SEQ_SLEEPERS, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED);
        syscall(SYS_futex, rec_seq(rec), FUTEX_WAKE, INT_MAX, NULL, NULL, 0); /* shared futex: other processes wait */
    }
}

static inline void release_read(uint8_t *rec, int32_t slot)
{
    uint64_t *word = reader_word(rec, slot);
    int shift = (slot & 7) << 3;
    uint64_t old = LOAD(word);
    for (;;) {
        /* CAS, not a subtract: a count already 0 (a misuse race) must not borrow from the neighbouring slot's byte. */
        if (((old >> shift) & SS_MAX_HOLDS) == 0)
            return;
        if (__atomic_compare_exchange_n(word, &old, old - (1ull << shift), 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
            break;
    }
    wake_if_sleepers(rec);
}

/* Reader steps 0-3 once, without waiting: 0 if a writer is present, the CAS met contention, or the slot's count is
 * saturated. */
static inline int try_read_fast(uint8_t *rec, int32_t slot)
{
    uint64_t *word = reader_word(rec, slot);
    int shift = (slot & 7) << 3;
    uint64_t old = LOAD(word);
    uint32_t mine = (uint32_t)(old >> shift) & SS_MAX_HOLDS;
    if (mine == 0 ? writer_present(rec) : (mine == SS_MAX_HOLDS || writer_active(rec)))
        return 0;

    /* Step 0, before every increment (spin model F5): the line's ReaderLines bit; a load that finds it set suffices
     * because it is never cleared while the record is in use. */
    uint64_t line = 1ull << (slot >> 6);
    if ((LOAD(rec_reader_lines(rec)) & line) == 0)
        __atomic_fetch_or(rec_reader_lines(rec), line, __ATOMIC_SEQ_CST);

    /* Step 2; the locked CAS is a full fence, so step 3's loads come after it. */
    if (!__atomic_compare_exchange_n(word, &old, old + (1ull << shift), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return 0;

    /* Step 3: Dekker re-check against a writer that announced itself after step 1. */
    if (mine == 0 ? writer_present(rec) : writer_active(rec)) {
        release_read(rec, slot);
        return 0;
    }
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
    int32_t index[CACHE_CAPACITY];
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct ss_tables *g_tables;
static pthread_mutex_t g_gate = PTHREAD_MUTEX_INITIALIZER; /* the free list and the high water */
static int32_t *g_free;
static int32_t g_free_count;
static pthread_key_t g_thread_key;
static int g_thread_key_made;
static __thread struct lease_cache t_cache;
static __thread int t_cache_registered;

static inline int32_t cache_take(struct lease_cache *c)
{
    int32_t index = c->index[c->head];
    c->head = (c->head + 1) & (CACHE_CAPACITY - 1);
    c->count--;
    return index;
}

static inline void cache_add(struct lease_cache *c, int32_t index)
{
    c->index[(c->head + c->count) & (CACHE_CAPACITY - 1)] = index;
    c->count++;
}

/* A thread that exits gives its cached leases back (they are free slots; nothing is held in them). Runs on the
 * exiting thread, so t_cache_registered is that thread's: a later get or put of the same thread (another key's
 * destructor) registers again. */
static void give_back_cache(void *p)
{
    struct lease_cache *c = p;
    pthread_mutex_lock(&g_gate);
    while (c->count > 0)
        g_free[g_free_count++] = cache_take(c);
    pthread_mutex_unlock(&g_gate);
    t_cache_registered = 0;
}

/* Before a thread's cache first holds an index (a get's refill, or a put by a thread that never got): so that its
 * exit gives the indexes back. */
static __attribute__((noinline)) void register_cache(struct lease_cache *c)
{
    if (g_thread_key_made && pthread_setspecific(g_thread_key, c) == 0)
        t_cache_registered = 1;
}

static void init_once(void)
{
    int32_t *free_list = malloc(sizeof(int32_t) * SS_LEASE_CAPACITY);
    if (free_list == NULL)
        return;
    g_thread_key_made = pthread_key_create(&g_thread_key, give_back_cache) == 0;
    g_free = free_list;
    STORE(&g_tables, ssn_fast_tables()); /* NULL if the managed half could not allocate them: every get is then
                                            NO_RESOURCES (from the managed half) and every put NOT_FOUND */
}

static inline struct ss_tables *tables(void)
{
    struct ss_tables *t = LOAD(&g_tables);
    if (__builtin_expect(t != NULL, 1))
        return t;
    pthread_once(&g_once, init_once);
    return LOAD(&g_tables);
}


/* The cache is empty: take a batch from the free list, or fresh leases from the high water. -1 when all
 * SS_LEASE_CAPACITY are out. */
static __attribute__((noinline)) int32_t refill(struct ss_tables *t, struct lease_cache *c)
{
    if (!t_cache_registered)
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

/* A free lease index owned by the caller, or -1 when all SS_LEASE_CAPACITY are out. */
static inline int32_t rent(struct ss_tables *t)
{
    struct lease_cache *c = &t_cache;
    return __builtin_expect(c->count > 0, 1) ? cache_take(c) : refill(t, c);
}

static __attribute__((noinline)) void spill(struct lease_cache *c)
{
    pthread_mutex_lock(&g_gate);
    while (c->count > CACHE_BATCH)
        g_free[g_free_count++] = cache_take(c); /* the oldest: the ring keeps rotating through the newer ones */
    pthread_mutex_unlock(&g_gate);
}

static inline void give_back(int32_t index)
{
    struct lease_cache *c = &t_cache;
    if (__builtin_expect(!t_cache_registered, 0))
        register_cache(c);
    if (__builtin_expect(c->count == CACHE_CAPACITY, 0))
        spill(c);
    cache_add(c, index);
}

static inline struct ss_object_entry *entry_of(struct ss_tables *t, int32_t object_id)
{
    if (object_id < 0)
        return NULL;
    int32_t index = object_id & ((1 << SS_INDEX_BITS) - 1);
    struct ss_object_entry *chunk = LOAD(&t->entry_chunks[index >> SS_ENTRY_CHUNK_BITS]);
    return chunk == NULL ? NULL : &chunk[index & ((1 << SS_ENTRY_CHUNK_BITS) - 1)];
}

/* ---- object_get / object_put ---------------------------------------------------------------------------------- */

static int32_t publish(struct ss_lease *l, int32_t index)
{
    int32_t id = (l->generation << SS_INDEX_BITS) | (SS_LEASE_BASE + index);
    STORE(&l->state, id); /* release: the lease's fields are visible with its id */
    return id;
}

static int32_t get_core(int32_t object_id, size_t offset, size_t size, uint8_t **buf, int32_t timeout_ms)
{
    struct ss_tables *t = tables();
    int32_t index = t == NULL ? -1 : rent(t);
    if (index < 0) /* no tables, or every lease is out: the managed half reports NoResources after its other checks */
        return ssn_get_slow(object_id, offset, size, buf, timeout_ms, 0, NULL, NULL, NULL, NULL);

    struct ss_lease *l = &t->leases[index];
    l->object = object_id < 0 ? -1 : (object_id & ((1 << SS_INDEX_BITS) - 1));
    STORE(&l->state, SS_LEASE_ANNOUNCED);
    /* The announcement must not sink below the entry's load (the close's membarrier covers the CPU; this covers the
     * compiler, which may otherwise move a release store after a later acquire load). */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);

    struct ss_object_entry *e = entry_of(t, object_id);
    if (e != NULL && buf != NULL && LOAD(&e->id) == object_id && LOAD(e->lost) == 0 && LOAD(e->closed) == 0) {
        uint64_t osize = e->size;
        int shift = e->block_shift;
        if (size != 0 && offset < osize && size <= osize - offset && (offset >> shift) == ((offset + size - 1) >> shift)) {
            uint8_t *rec = e->records + (size_t)(offset >> shift) * (size_t)e->record_size;
            if (try_read_fast(rec, e->slot)) {
                l->slot = e->slot;
                l->first = rec;
                l->count = 1;
                l->record_size = e->record_size;
                *buf = e->data + offset;
                return publish(l, index);
            }
        }
    }

    /* Anything else, still announced: the managed half checks, waits and reports, as it always did. */
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

EXPORT int object_get(int object_id, size_t offset, size_t size, char **buf)
{
    return get_core(object_id, offset, size, (uint8_t **)buf, -1);
}

EXPORT int object_get_timed(int object_id, size_t offset, size_t size, char **buf, int timeout_ms)
{
    return get_core(object_id, offset, size, (uint8_t **)buf, timeout_ms);
}

EXPORT int object_put(int op)
{
    int32_t index = op & ((1 << SS_INDEX_BITS) - 1);
    struct ss_tables *t = op < 0 || index < SS_LEASE_BASE ? NULL : tables();
    if (t == NULL)
        return ssn_put_error(op); /* not a lease id: NotFound, or InvalidArgument for an asynchronous operation */

    index -= SS_LEASE_BASE;
    struct ss_lease *l = &t->leases[index];
    int32_t expected = op;
    if (!__atomic_compare_exchange_n(&l->state, &expected, SS_LEASE_PUTTING, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return ssn_put_error(op); /* never got, already put, or being put by another thread */

    for (int32_t k = 0; k < l->count; k++)
        release_read(l->first + (size_t)k * (size_t)l->record_size, l->slot);

    l->generation = (l->generation + 1) & SS_GENERATION_MASK;
    STORE(&l->state, SS_LEASE_FREE);
    give_back(index);
    return 0;
}
