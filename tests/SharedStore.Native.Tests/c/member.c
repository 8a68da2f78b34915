/* One small member process of a container, for the many-members test and the join-1024 bench: a C client over
 * libsharedstore.so costs a few MiB per process, where a .NET client costs tens.
 * Usage: member CONTAINER OBJECT hold|loop   ($SHAREDSTORE_SOCKET)
 *   hold: join, print "joined", then read commands from stdin, one per line: "g" takes a read lease on block 0
 *         (bytes 0-4095) and prints "held"; "p" takes CLOCK_MONOTONIC, puts the lease and prints "put NS" (the time
 *         just before the put). End of file: exit 0 (a lease still held is released by the broker).
 *   loop: join, print "joined", then get and put bytes 0-4095 in a loop (hold 20-60 ms, pause 20-60 ms) until stdin
 *         reaches end of file; then leave the object and the container and exit 0.
 * A failed join prints "err CODE" (CODE the negative error) and exits 2; a failed get or put prints "fail WHAT CODE"
 * on stderr and exits 3. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sharedstore.h"

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* 1 when stdin has reached end of file (or failed), without blocking. */
static int stdin_closed(void)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char buf[64];
    return read(0, buf, sizeof buf) <= 0;
}

static void pause_ms(unsigned *seed, int lo, int hi)
{
    int ms = lo + (int)(rand_r(seed) % (unsigned)(hi - lo + 1));
    struct timespec t = { .tv_sec = 0, .tv_nsec = ms * 1000000L };
    nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[3], "hold") != 0 && strcmp(argv[3], "loop") != 0)) {
        fprintf(stderr, "usage: member CONTAINER OBJECT hold|loop\n");
        return 64;
    }

    int con = container_join(argv[1]);
    if (con < 0) {
        printf("err %d\n", con);
        return 2;
    }

    int obj = object_join(con, argv[2]);
    if (obj < 0) {
        printf("err %d\n", obj);
        return 2;
    }

    char *p;
    if (strcmp(argv[3], "hold") == 0) {
        printf("joined\n");
        fflush(stdout);
        char line[16];
        int op = -1;
        while (fgets(line, sizeof line, stdin) != NULL) {
            if (line[0] == 'g') {
                op = object_get_timed(obj, 0, 4096, &p, 120000);
                if (op < 0) {
                    fprintf(stderr, "fail get %d\n", op);
                    return 3;
                }

                printf("held\n");
            } else if (line[0] == 'p') {
                long long t = now_ns();
                int rc = object_put(op);
                if (rc < 0) {
                    fprintf(stderr, "fail put %d\n", rc);
                    return 3;
                }

                printf("put %lld\n", t);
            }

            fflush(stdout);
        }

        return 0;
    }

    printf("joined\n");
    fflush(stdout);
    unsigned seed = (unsigned)getpid();
    while (!stdin_closed()) {
        int op = object_get_timed(obj, 0, 4096, &p, 60000);
        if (op < 0) {
            fprintf(stderr, "fail get %d\n", op);
            return 3;
        }

        volatile char c = p[0]; /* the lease maps the bytes */
        (void)c;
        pause_ms(&seed, 20, 60);
        int rc = object_put(op);
        if (rc < 0) {
            fprintf(stderr, "fail put %d\n", rc);
            return 3;
        }

        pause_ms(&seed, 20, 60);
    }

    object_leave(obj);
    container_leave(con);
    return 0;
}
