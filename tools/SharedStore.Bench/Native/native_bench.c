/* The bench's C side (tools/SharedStore.Bench, Scenarios/NativeScenarios.cs compiles and runs it). Prints JSON rows
 * in the bench's format, one per line: {"scenario", "metric", "unit", "value", "baseline", "baseline_value"}.
 *
 *   native_bench getput NAME ROUNDS ITERS   c-get-put-1block: ns per object_get + object_put of 4 KiB in one block,
 *                                           uncontended, against c-pthread-rwlock-rd: pthread_rwlock_rdlock + unlock of
 *                                           a PTHREAD_PROCESS_SHARED rwlock in MAP_SHARED memory. Rounds alternate;
 *                                           the first is a warm-up; medians. A second row (diagnostic): two calls of
 *                                           sharedstore_strerror(0), the cost of entering the library twice.
 *   native_bench load LIBRARY NAME          native-lib-load / native-first-call: ms of dlopen(LIBRARY) and of its first
 *                                           calls, against the time to spawn and reap /bin/true (process start scale).
 * The library is linked for getput (as a program would be) and dlopen'ed for load (so the load itself is timed). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sharedstore.h"

extern char **environ;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void row(const char *scenario, const char *metric, const char *unit, double value, const char *baseline,
                double baseline_value)
{
    printf("{\"scenario\": \"%s\", \"metric\": \"%s\", \"unit\": \"%s\", \"value\": %.4f, \"baseline\": \"%s\", "
           "\"baseline_value\": %.4f}\n", scenario, metric, unit, value, baseline, baseline_value);
    fflush(stdout);
}

static int getput(char *name, int rounds, long iters)
{
    int con = container_create(name, (int)getgid());
    int obj = con < 0 ? con : object_create(con, "one-block", 1 << 20);
    if (obj < 0) {
        fprintf(stderr, "setup failed: %d %s\n", obj, sharedstore_last_error());
        return 1;
    }
    pthread_rwlock_t *lock = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_rwlock_init(lock, &attr);

    double *v = calloc((size_t)rounds, sizeof *v), *b = calloc((size_t)rounds, sizeof *b);
    double *e = calloc((size_t)rounds, sizeof *e), *c = calloc((size_t)rounds, sizeof *c);
    volatile char sink = 0;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            char *p;
            int op = object_get(obj, 0, 4096, &p);
            sink += p[0];
            object_put(op);
        }
        v[r] = (now_ns() - t0) / (double)iters;

        char *mem = (char *)lock + 2048;
        t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            pthread_rwlock_rdlock(lock);
            sink += mem[0];
            pthread_rwlock_unlock(lock);
        }
        b[r] = (now_ns() - t0) / (double)iters;

        /* Diagnostic: two calls into the library that do nothing (the floor of two exports: the reverse-P/Invoke
         * transitions in and out, twice). */
        t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            sink += *sharedstore_strerror(0);
            sink += *sharedstore_strerror(0);
        }
        e[r] = (now_ns() - t0) / (double)iters;

        /* Diagnostic: the locked instructions of a pair alone, three CAS on two lines of shared memory (the block
         * lock's increment and release on the readers word, the put's claim on the lease): the floor of this design. */
        uint64_t *word = (uint64_t *)((char *)lock + 1024), *claim = (uint64_t *)((char *)lock + 1536);
        t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            uint64_t o = __atomic_load_n(word, __ATOMIC_ACQUIRE);
            __atomic_compare_exchange_n(word, &o, o + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
            o = __atomic_load_n(claim, __ATOMIC_ACQUIRE);
            __atomic_compare_exchange_n(claim, &o, o + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
            o = __atomic_load_n(word, __ATOMIC_ACQUIRE);
            __atomic_compare_exchange_n(word, &o, o - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        }
        c[r] = (now_ns() - t0) / (double)iters;
    }
    (void)sink;
    double base = median(b + 1, rounds - 1);
    row("c-get-put-1block", "median", "ns", median(v + 1, rounds - 1), "c-pthread-rwlock-rd", base);
    row("c-get-put-1block:two-empty-calls", "median", "ns", median(e + 1, rounds - 1), "c-pthread-rwlock-rd", base);
    row("c-get-put-1block:three-cas", "median", "ns", median(c + 1, rounds - 1), "c-pthread-rwlock-rd", base);
    object_leave(obj);
    container_destroy(con);
    return 0;
}

static double spawn_true_ms(void)
{
    double best = 1e18;
    for (int i = 0; i < 5; i++) {
        pid_t pid;
        char *argv[] = {"/bin/true", NULL};
        double t0 = now_ns();
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0)
            return -1;
        waitpid(pid, NULL, 0);
        double t = (now_ns() - t0) / 1e6;
        best = t < best ? t : best;
    }
    return best;
}

static int load(const char *library, char *name)
{
    double spawn = spawn_true_ms();
    double t0 = now_ns();
    void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    double t_load = (now_ns() - t0) / 1e6;
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    const char *(*strerror_fn)(int) = (const char *(*)(int))dlsym(h, "sharedstore_strerror");
    int (*create)(char *, int) = (int (*)(char *, int))dlsym(h, "container_create");
    int (*destroy)(int) = (int (*)(int))dlsym(h, "container_destroy");
    t0 = now_ns();
    strerror_fn(0); /* the first call into the library starts its runtime */
    double t_first = (now_ns() - t0) / 1e6;
    t0 = now_ns();
    strerror_fn(0);
    double t_second = (now_ns() - t0) / 1e6;
    t0 = now_ns();
    int con = create(name, (int)getgid()); /* the first call that needs the broker connects */
    double t_connect = (now_ns() - t0) / 1e6;
    if (con >= 0)
        destroy(con);
    row("native-lib-load", "dlopen", "ms", t_load, "spawn-true", spawn);
    row("native-first-call", "runtime-start", "ms", t_first, "spawn-true", spawn);
    row("native-first-call", "second-call", "ms", t_second, "spawn-true", spawn);
    row("native-first-call", "first-container-create", "ms", t_connect, "spawn-true", spawn);
    return con >= 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "getput") == 0)
        return getput(argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc == 4 && strcmp(argv[1], "load") == 0)
        return load(argv[2], argv[3]);
    fprintf(stderr, "usage: native_bench getput NAME ROUNDS ITERS | load LIBRARY NAME\n");
    return 2;
}
