/* The seed's writer(), as a real program:
 *
 *   writer() {
 *     int con = container_create("con", groupid)
 *     int obj = object_create(con, "A", size)
 *     object_getattr(con, obj, &objattr)
 *     object_write(con, obj, 0, payload, objattr.size)
 *     object_destroy(obj);
 *     container_destroy(con)
 *   }
 *
 * Fixed: object_getattr and object_write take the object id alone (as the seed declares them), every return value
 * is checked, and the payload is the C# sample's (header + checksum), so a C# reader can verify it.
 * Usage: writer [CONTAINER [MIB]]   (defaults: con, 64)
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sharedstore.h"
#include "payload.h"

static int fail(const char *call, int rc)
{
    fprintf(stderr, "[writer %d] %s failed: %d (%s: %s)\n", (int)getpid(), call, rc, sharedstore_strerror(rc),
            sharedstore_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    char *name = argc > 1 ? argv[1] : "con";
    size_t size = (size_t)(argc > 2 ? atol(argv[2]) : 64) << 20;
    int groupid = (int)getgid();
    struct object_attr objattr;

    int con = container_create(name, groupid);
    if (con < 0)
        return fail("container_create", con);
    printf("[writer %d] container_create(\"%s\", group %d) -> container %d\n", (int)getpid(), name, groupid, con);

    int obj = object_create(con, "A", size);
    if (obj < 0)
        return fail("object_create", obj);
    int rc = object_getattr(obj, &objattr);
    if (rc < 0)
        return fail("object_getattr", rc);
    printf("[writer %d] object_create(\"A\", %zu bytes) -> object %d\n", (int)getpid(), objattr.size, obj);

    unsigned char *payload = malloc(objattr.size);
    if (payload == NULL)
        return fail("malloc", SHAREDSTORE_E_NO_RESOURCES);
    payload_make(payload, objattr.size, 42);
    rc = object_write(obj, 0, (char *)payload, objattr.size);
    if (rc < 0)
        return fail("object_write", rc);
    uint64_t sum;
    memcpy(&sum, payload + 8, 8);
    printf("[writer %d] object_write(0, %zu bytes), checksum %016llX\n", (int)getpid(), objattr.size,
           (unsigned long long)sum);
    free(payload);
    fflush(stdout);

    rc = object_destroy(obj); /* blocks while the reader still uses "A" */
    if (rc < 0)
        return fail("object_destroy", rc);
    printf("[writer %d] object_destroy returned (the reader had left)\n", (int)getpid());
    rc = container_destroy(con);
    if (rc < 0)
        return fail("container_destroy", rc);
    printf("[writer %d] container_destroy done\n", (int)getpid());
    return 0;
}
