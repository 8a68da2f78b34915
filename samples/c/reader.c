/* The seed's reader(), as a real program:
 *
 *   reader() {
 *     while ((con=container_join("con")) < 0) ; // wait for writer
 *     int obj = object_join(con, "A")
 *     object_getattr(con, obj, &objattr)
 *     size_t data_size = objattr.size
 *     char *data;
 *     op = object_get(obj, 0, objattr.size, &data)
 *     compute(data, data_size)
 *     object_put(op)
 *     container_leave(con)
 *   }
 *
 * Fixed: the wait for the writer is container_join_wait (the broker tells the reader when the container exists: it
 * sleeps instead of spinning, and gives up after 60 s); object "A" may not exist yet when the container does, so it is
 * waited for the same way (object_join_wait); object_getattr takes the object id alone; the get may come before the
 * writer's write (a write locks every block it covers, so a get of the whole object sees all of it or none), so the
 * reader sleeps until the object's version changes (object_wait) and gets again; compute() is the payload's
 * checksum; and every return value is checked. Nothing polls.
 * Usage: reader [CONTAINER]   (default: con). Exit 0 iff the checksum verified.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "sharedstore.h"
#include "payload.h"

#define WAIT_MS 60000

static int fail(const char *call, int rc)
{
    fprintf(stderr, "[reader %d] %s failed: %d (%s: %s)\n", (int)getpid(), call, rc, sharedstore_strerror(rc),
            sharedstore_last_error());
    return 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    char *name = argc > 1 ? argv[1] : "con";
    struct object_attr objattr;
    double start = now_ms();

    int con = container_join_wait(name, WAIT_MS); /* wait for writer: pushed by the broker */
    if (con < 0)
        return fail("container_join", con);
    printf("[reader %d] container_join(\"%s\") -> container %d\n", (int)getpid(), name, con);

    int obj = object_join_wait(con, "A", WAIT_MS);
    if (obj < 0)
        return fail("object_join", obj);
    int rc = object_getattr(obj, &objattr);
    if (rc < 0)
        return fail("object_getattr", rc);
    size_t data_size = objattr.size;
    printf("[reader %d] object_join(\"A\") -> object %d, %zu bytes\n", (int)getpid(), obj, data_size);

    for (;;) {
        char *data;
        int64_t seen = object_version(obj); /* before the get: a write after it makes object_wait return at once */
        if (seen < 0)
            return fail("object_version", (int)seen);
        int op = object_get_timed(obj, 0, objattr.size, &data, WAIT_MS);
        if (op < 0)
            return fail("object_get", op);
        if (payload_is_written((unsigned char *)data)) {
            uint64_t expected, actual;
            int ok = payload_verify((unsigned char *)data, data_size, &expected, &actual); /* compute(data, data_size) */
            object_put(op);
            printf("[reader %d] object_get(0, %zu) -> checksum %016llX, expected %016llX: %s\n", (int)getpid(),
                   data_size, (unsigned long long)actual, (unsigned long long)expected, ok ? "verified" : "MISMATCH");
            if (!ok)
                return 1;
            break;
        }
        rc = object_put(op);
        if (rc < 0)
            return fail("object_put", rc);
        int64_t v = object_wait(obj, seen, WAIT_MS); /* sleeps until a write completes */
        if (v < 0 || now_ms() - start > WAIT_MS) {
            fprintf(stderr, "[reader %d] the writer's payload never appeared (%lld)\n", (int)getpid(), (long long)v);
            return 1;
        }
    }

    printf("[reader %d] object_put, container_leave\n", (int)getpid());
    rc = container_leave(con);
    if (rc < 0)
        return fail("container_leave", rc);
    return 0;
}
