/* Threads of one process calling object_get/object_put concurrently on one object, while another thread submits
 * object_awrite of whole blocks (the broker applies them under the blocks' write locks, so a get sees a block all
 * old or all new), and pairs of threads race to put the same lease (exactly one put may succeed). Last, threads get
 * and put while the main thread leaves their container: the leave succeeds only when no lease is out and no get or put
 * is inside (gets and puts take no use of the object id: they announce themselves in their operation slot, which the
 * leave scans after a process-wide barrier), after it gets are NOT_FOUND, and nothing touches the unmapped memory.
 * Then the C get/put path's lease ids (native/fastpath.c): a stale id stays dead for at least 65 536 get/put pairs
 * of one thread; threads that only put and exit give their cached lease ids back (2 100 of them put 64 leases each,
 * more than the 131 072 ids); and a destroy through one id races gets through another id of the same object: the
 * destroy succeeds only when no lease is out, and afterwards those gets are NOT_FOUND.
 * Usage: threads NAME   ($SHAREDSTORE_SOCKET). Exit 0 iff every check held. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sharedstore.h"

#define BLOCK 4096
#define BLOCKS 16
#define READERS 4
#define ROUNDS 20000
#define RACES 20000

static int obj;
static atomic_int errors, stop;
static atomic_long gets;

static void report(const char *what, int rc)
{
    if (atomic_fetch_add(&errors, 1) < 10)
        fprintf(stderr, "FAIL %s: %d (%s: %s)\n", what, rc, sharedstore_strerror(rc), sharedstore_last_error());
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        size_t b = rand_r(&seed) % BLOCKS;
        char *p;
        int op = object_get_timed(obj, b * BLOCK, BLOCK, &p, 10000);
        if (op < 0) {
            report("object_get", op);
            continue;
        }
        for (int k = 1; k < BLOCK; k++)
            if (p[k] != p[0]) {
                report("a get saw half a write", k);
                break;
            }
        int rc = object_put(op);
        if (rc != 0)
            report("object_put", rc);
        atomic_fetch_add(&gets, 1);
    }
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    char buf[BLOCK];
    int pending[64], n = 0;
    for (unsigned v = 1; !atomic_load(&stop); v++) {
        memset(buf, (int)(v & 0xff), sizeof buf);
        int op = object_awrite(obj, (v % BLOCKS) * BLOCK, buf, BLOCK); /* buf may be reused at once */
        if (op < 0) {
            report("object_awrite", op);
            break;
        }
        pending[n++] = op;
        if (n == 64) {
            for (int i = 0; i < n; i++) {
                int st = object_opwait(pending[i], 30000);
                int rc = object_return(pending[i]);
                if (st != 0 || rc != BLOCK)
                    report("awrite completion", st != 0 ? st : rc);
            }
            n = 0;
        }
    }
    for (int i = 0; i < n; i++) {
        object_opwait(pending[i], 30000);
        object_return(pending[i]);
    }
    return NULL;
}

/* The race: both threads spin (no futex wake-up to stagger them) until `round` names the next lease, then put it.
   (With a pthread barrier instead, the wake-ups staggered the threads so much that a put claiming its id without an
   atomic instruction went undetected; spinning starts, it fails 17 000 of 20 000 rounds.) A spinner yields now and
   then, so a descheduled peer on a busy machine costs a yield, not a time slice per round. */
static atomic_int race_id, racer_wins, round_no, racer_done;

#define LEAVE_GETTERS 3
#define LEAVE_ROUNDS 30
static int leave_obj;
static atomic_int left;
static atomic_long leave_gets;

static void *leave_getter(void *arg)
{
    (void)arg;
    for (;;) {
        char *p;
        int op = object_get(leave_obj, 0, 8, &p);
        if (op == SHAREDSTORE_E_NOT_FOUND)
            return NULL; /* the container was left */
        if (op < 0) {
            report("object_get during the leave race", op);
            return NULL;
        }
        volatile char c = p[0]; /* the mapping is there while the lease is out */
        (void)c;
        if (atomic_load(&left))
            report("a lease was out when container_leave succeeded", op);
        atomic_fetch_add(&leave_gets, 1);
        int rc = object_put(op);
        if (rc != 0)
            report("object_put during the leave race", rc);
    }
}

static void spin_until(atomic_int *word, int value)
{
    for (unsigned n = 1; atomic_load_explicit(word, memory_order_acquire) != value; n++)
        if (n % 4096 == 0)
            sched_yield();
}

static void *racer(void *arg)
{
    (void)arg;
    for (int i = 1; i <= RACES; i++) {
        spin_until(&round_no, i);
        if (object_put(atomic_load(&race_id)) == 0)
            atomic_fetch_add(&racer_wins, 1);
        atomic_store_explicit(&racer_done, i, memory_order_release);
    }
    return NULL;
}

/* ---- lease ids ---- */

#define PUT_THREADS 2100
#define PER_PUT_THREAD 64

static int put_ops[PER_PUT_THREAD];

static void *put_only(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_PUT_THREAD; i++) {
        int rc = object_put(put_ops[i]);
        if (rc != 0)
            report("object_put from a thread that never got", rc);
    }
    return NULL;
}

static void lease_ids(void)
{
    char *p;
    int x = object_get(obj, 0, 8, &p);
    if (x < 0 || object_put(x) != 0)
        return report("object_get/put of X", x);
    for (int i = 0; i < 65536; i++) {
        int y = object_get(obj, 0, 8, &p);
        if (y == x) {
            report("a lease id came back within 65536 pairs of one thread", i);
            object_put(y);
            break;
        }
        int stale = object_put(x);
        if (stale != SHAREDSTORE_E_NOT_FOUND)
            report("a stale put of X", stale);
        object_put(y);
    }

    for (int round = 0; round < PUT_THREADS && atomic_load(&errors) == 0; round++) {
        for (int i = 0; i < PER_PUT_THREAD; i++) {
            put_ops[i] = object_get(obj, (size_t)i * 8, 8, &p);
            if (put_ops[i] < 0)
                return report("object_get after threads that only put exited (lease ids leaked?)", put_ops[i]);
        }
        pthread_t t;
        pthread_create(&t, NULL, put_only, NULL);
        pthread_join(t, NULL);
    }
}

/* ---- a destroy through one id races gets through another ---- */

#define DESTROY_ROUNDS 30

static int destroy_f1;
static atomic_int destroyed, destroy_stop;

static void *destroy_getter(void *arg)
{
    (void)arg;
    while (!atomic_load(&destroy_stop)) {
        char *p;
        int op = object_get(destroy_f1, 0, 8, &p);
        if (op < 0) {
            if (op != SHAREDSTORE_E_NOT_FOUND) /* NOT_FOUND also while a close is under way (see the header) */
                report("object_get racing a destroy", op);
            sched_yield();
            continue;
        }
        int before = atomic_load(&destroyed);
        for (volatile int k = 0; k < 20000; k++) /* hold the lease a while */
            ;
        if (before || atomic_load(&destroyed))
            report("object_destroy through another id returned while this lease was out", op);
        object_put(op);
    }
    return NULL;
}

static void destroy_race(const char *name)
{
    char name3[256];
    snprintf(name3, sizeof name3, "%s-destroy", name);
    int con = container_create(name3, (int)getgid());
    if (con < 0)
        return report("container_create for the destroy race", con);
    long busy = 0;
    for (int r = 0; r < DESTROY_ROUNDS && atomic_load(&errors) == 0; r++) {
        destroy_f1 = object_create(con, "F", 2 * BLOCK);
        int f2 = object_join(con, "F");
        if (destroy_f1 < 0 || f2 < 0)
            return report("object_create/join for the destroy race", destroy_f1 < 0 ? destroy_f1 : f2);
        atomic_store(&destroyed, 0);
        atomic_store(&destroy_stop, 0);
        pthread_t t;
        pthread_create(&t, NULL, destroy_getter, NULL);
        for (volatile int k = 0; k < 200000; k++)
            ;
        int rc;
        while ((rc = object_destroy(f2)) == SHAREDSTORE_E_BUSY)
            busy++;
        if (rc != 0)
            report("object_destroy during gets through another id", rc);
        atomic_store(&destroyed, 1);
        for (volatile int k = 0; k < 200000; k++)
            ;
        atomic_store(&destroy_stop, 1);
        pthread_join(t, NULL);
        rc = object_leave(destroy_f1);
        if (rc != 0)
            report("object_leave of the other id after the destroy", rc);
    }
    printf("destroy race: %d rounds, %ld busy destroys\n", DESTROY_ROUNDS, busy);
    container_destroy(con);
}

int main(int argc, char **argv)
{
    char *name = argc > 1 ? argv[1] : "threads";
    struct container_options small = {SHAREDSTORE_WRITE_ALL_MEMBERS, BLOCK, NULL, 0};
    int con = container_create_ex(name, (int)getgid(), &small);
    if (con < 0)
        return report("container_create_ex", con), 1;
    obj = object_create(con, "A", BLOCKS * BLOCK);
    if (obj < 0)
        return report("object_create", obj), 1;

    pthread_t t[READERS], w;
    pthread_create(&w, NULL, writer, NULL);
    for (size_t i = 0; i < READERS; i++)
        pthread_create(&t[i], NULL, reader, (void *)(i + 1));
    for (int i = 0; i < READERS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&stop, 1);
    pthread_join(w, NULL);

    /* Two threads put one lease at once, RACES times: exactly one put of each lease succeeds. */
    pthread_t rt;
    pthread_create(&rt, NULL, racer, NULL);
    int wins_here = 0;
    for (int i = 1; i <= RACES; i++) {
        char *p;
        int op = object_get(obj, 0, 1, &p);
        if (op < 0)
            report("object_get for the race", op);
        atomic_store(&race_id, op);
        atomic_store_explicit(&round_no, i, memory_order_release);
        if (object_put(op) == 0)
            wins_here++;
        spin_until(&racer_done, i);
    }
    pthread_join(rt, NULL);
    int wins = wins_here + atomic_load(&racer_wins);
    if (wins != RACES)
        report("exactly one put per lease", wins);

    lease_ids();

    /* Every get was put: a write of the whole object neither deadlocks on our own holds nor waits. */
    static char all[BLOCKS * BLOCK];
    int rc = object_write_timed(obj, 0, all, sizeof all, 1000);
    if (rc != 0)
        report("object_write after the threads", rc);
    rc = container_destroy(con);
    if (rc != 0)
        report("container_destroy", rc);

    /* Gets and puts race with a leave of their container (which unmaps it), LEAVE_ROUNDS times. */
    long busy = 0;
    for (int round = 0; round < LEAVE_ROUNDS && atomic_load(&errors) == 0; round++) {
        char name2[256];
        snprintf(name2, sizeof name2, "%s-leave", name);
        int con2 = container_create(name2, (int)getgid());
        leave_obj = con2 < 0 ? con2 : object_create(con2, "B", BLOCK);
        if (leave_obj < 0)
            return report("setup of the leave race", leave_obj), 1;
        atomic_store(&left, 0);
        atomic_store(&leave_gets, 0);
        pthread_t lt[LEAVE_GETTERS];
        for (int i = 0; i < LEAVE_GETTERS; i++)
            pthread_create(&lt[i], NULL, leave_getter, NULL);
        while (atomic_load(&leave_gets) < 2000 && atomic_load(&errors) == 0)
            sched_yield();
        while ((rc = container_leave(con2)) == SHAREDSTORE_E_BUSY)
            busy++;
        if (rc != 0)
            report("container_leave during gets", rc);
        atomic_store(&left, 1);
        for (int i = 0; i < LEAVE_GETTERS; i++)
            pthread_join(lt[i], NULL);
        con2 = container_join(name2);
        if (con2 < 0 || (rc = container_destroy(con2)) != 0)
            report("container_destroy after the leave race", con2 < 0 ? con2 : rc);
    }
    printf("leave race: %d rounds, %ld busy leaves\n", LEAVE_ROUNDS, busy);
    destroy_race(name);
    printf("%ld gets, %d lease races, %d errors\n", atomic_load(&gets), RACES, atomic_load(&errors));
    return atomic_load(&errors) == 0 ? 0 : 1;
}
