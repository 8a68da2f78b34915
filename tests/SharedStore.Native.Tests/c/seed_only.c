/* A program written against the seed's text alone: it declares the seed's prototypes itself (no sharedstore.h), with
 * the seed's struct object_attr (an int size), and links with -lsharedstore. The library's object_attr has a size_t
 * size at the same offset, so on little-endian x86-64 the seed's int receives the low 32 bits: exact for objects
 * below 2 GiB. Writes a pattern, reads it back through object_get, and checks the seed's error returns are negative.
 * Usage: seed_only NAME   ($SHAREDSTORE_SOCKET). Exit 0 on success. */
#define _DEFAULT_SOURCE /* usleep */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct object_attr {
    int size;   /* object data size */
    void *data; /* object data */
};

int container_create(char *container, int groupid);
int container_destroy(int container_id);
int container_join(char *container);
int container_leave(int container_id);
int object_create(int container_id, char *object, size_t size);
int object_destroy(int object_id);
int object_join(int container_id, char *object);
int object_leave(int object_id);
int object_getattr(int object_id, struct object_attr *obj);
int object_write(int object_id, size_t offset, char *buf, size_t size);
int object_awrite(int object_id, size_t offset, char *buf, size_t size);
int object_aread(int object_id, size_t offset, char *buf, size_t size);
int object_opstatus(int operation_id);
int object_opcancel(int operation_id);
int object_return(int operation_id);
int object_get(int object_id, size_t offset, size_t size, char **buf);
int object_put(int operation_id);

#define FAIL(what) do { fprintf(stderr, "FAIL: %s\n", what); return 1; } while (0)

int main(int argc, char **argv)
{
    char *name = argc > 1 ? argv[1] : "seed-only";
    struct object_attr objattr;
    char payload[5000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (char)(i % 251);

    int con = container_create(name, (int)getgid());
    if (con < 0) FAIL("container_create");
    if (container_create(name, (int)getgid()) >= 0) FAIL("a second container_create must fail");
    int obj = object_create(con, "A", sizeof payload);
    if (obj < 0) FAIL("object_create");
    if (object_getattr(obj, &objattr) != 0 || objattr.size != (int)sizeof payload || objattr.data == NULL)
        FAIL("object_getattr");
    if (object_write(obj, 0, payload, (size_t)objattr.size) != 0) FAIL("object_write");

    int con2 = container_join(name);
    if (con2 >= 0) FAIL("a second join by the same process must fail");
    char *data;
    int op = object_get(obj, 0, (size_t)objattr.size, &data);
    if (op < 0 || memcmp(data, payload, sizeof payload) != 0) FAIL("object_get");
    if (object_put(op) != 0) FAIL("object_put");
    if (object_put(op) >= 0) FAIL("a second object_put must fail");

    int w = object_awrite(obj, 10, "seed", 4);
    if (w < 0) FAIL("object_awrite");
    int st;
    while ((st = object_opstatus(w)) == 1 /* INPROGRESS */)
        usleep(100);
    if (st != 0 || object_return(w) != 4) FAIL("object_opstatus / object_return");
    char back[4];
    int r = object_aread(obj, 10, back, 4);
    while (r >= 0 && object_opstatus(r) == 1)
        usleep(100);
    if (r < 0 || object_return(r) != 4 || memcmp(back, "seed", 4) != 0) FAIL("object_aread");
    if (object_opcancel(r) >= 0) FAIL("object_opcancel of a returned operation must fail");

    if (object_leave(obj) != 0) FAIL("object_leave");
    if (object_join(con, "A") < 0) FAIL("object_join");
    if (container_leave(con) != 0) FAIL("container_leave");
    con = container_join(name);
    if (con < 0) FAIL("container_join");
    obj = object_join(con, "A");
    if (obj < 0 || object_destroy(obj) != 0) FAIL("object_destroy");
    if (container_destroy(con) != 0) FAIL("container_destroy");
    printf("seed-only program: every call worked\n");
    return 0;
}
