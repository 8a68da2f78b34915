/*
 * sharedstore.h - the C interface of SharedStore (libsharedstore.so).
 *
 * The seed's "Paravirtualized Storage Interface" with its exact names and parameter lists, plus a few calls the seed
 * lacks (timed variants of the blocking calls, container_flush, sharedstore_strerror). Build the library with
 *     dotnet publish src/SharedStore.Native -c Release -r linux-x64 -o artifacts/native
 * and link with  -Iinclude -Lartifacts/native -lsharedstore -Wl,-rpath,'$ORIGIN/...'  (see samples/c/Makefile).
 *
 * Conventions (every call):
 *  - Ids (containers, objects, operations) are non-negative ints. They are reused after they are released; a
 *    released id is refused with SHAREDSTORE_E_NOT_FOUND (each id carries a generation, so a stale id is detected
 *    unless its table slot was reused a multiple of 8192 times since).
 *  - Errors are negative: -(the C# ErrorCode), listed in enum sharedstore_error. sharedstore_strerror() describes
 *    any return value; sharedstore_last_error() gives the message of this thread's last failure.
 *  - Every call is thread-safe. Calls on one object or container from several threads run concurrently; a leave or
 *    destroy of an id that another thread is using (or that has leases or asynchronous reads outstanding) is refused
 *    with SHAREDSTORE_E_BUSY and changes nothing.
 *  - No call aborts the process. Any call may also return SHAREDSTORE_E_INTERNAL (a bug: see sharedstore_last_error).
 *  - The library connects to the broker on the first container_create/container_join, at $SHAREDSTORE_SOCKET or the
 *    per-user default socket ($XDG_RUNTIME_DIR/sharedstore/broker.sock, else /tmp/sharedstore-UID/broker.sock).
 *    With SHAREDSTORE_START_BROKER=1 it starts a broker when none answers: $SHAREDSTORE_BROKER (a
 *    SharedStore.Broker.dll, run with `dotnet`, or an executable), else broker/SharedStore.Broker.dll beside
 *    libsharedstore.so (where `dotnet publish` puts it). Environment variables are read when the library first runs.
 *  - After the broker died, every call that acquires something or needs the broker returns
 *    SHAREDSTORE_E_BROKER_UNAVAILABLE; calls that release (object_put, object_leave, container_leave, object_return)
 *    still succeed, so a program can clean up, and the next container_create/container_join connects again.
 *  - Timeouts (the *_timed calls) are in milliseconds; a negative timeout waits forever, like the untimed call.
 *  - Do not call the library in a child created by fork() of a process that already used it (exec first).
 */
#ifndef SHAREDSTORE_H
#define SHAREDSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
/* C++ gets const names, so string literals can be passed; C gets the seed's char *. The library never writes
   through a name or a write buffer. */
#define SHAREDSTORE_NAME const char *
#else
#define SHAREDSTORE_NAME char *
#endif

/* Errors: -(int)SharedStore.ErrorCode. */
enum sharedstore_error {
    SHAREDSTORE_OK = 0,
    SHAREDSTORE_E_NOT_FOUND = -1,          /* no such container/object/operation id, or no such name */
    SHAREDSTORE_E_ALREADY_EXISTS = -2,     /* a container or object of that name exists */
    SHAREDSTORE_E_PERMISSION = -3,         /* Unix credentials do not admit the caller, or creator-only container */
    SHAREDSTORE_E_NO_RESOURCES = -4,       /* memory limit, tmpfs or disk full, 63 members, or a full id table */
    SHAREDSTORE_E_TIMEOUT = -5,            /* a timed call's wait ran out; nothing is held */
    SHAREDSTORE_E_DESTROYED = -6,          /* the container or object is being destroyed */
    SHAREDSTORE_E_INVALID_ARGUMENT = -7,   /* NULL pointer, range outside the object, bad name or size */
    SHAREDSTORE_E_BROKER_UNAVAILABLE = -8, /* no broker at the socket, or it died */
    SHAREDSTORE_E_VERSION_MISMATCH = -9,   /* the broker speaks another protocol version */
    SHAREDSTORE_E_CANCELED = -10,          /* object_return of a canceled operation */
    SHAREDSTORE_E_WOULD_DEADLOCK = -11,    /* a write over blocks this process holds leases on */
    SHAREDSTORE_E_INTERNAL = -12,          /* a bug in the broker or the library */
    SHAREDSTORE_E_BUSY = -13,              /* in use by this process (see each call), or still in progress */
    SHAREDSTORE_E_IO = -14                 /* a device (the broker's durable file) failed; last_error names the errno */
};

/* object_opstatus / object_opwait: 0 = completed, or one of these, or a negative error for a failed operation. */
#define SHAREDSTORE_INPROGRESS 1
#define SHAREDSTORE_CANCELED 2
/* object_opcancel: the operation is being applied or is done; it completes whole. */
#define SHAREDSTORE_NOT_CANCELED 1
#ifndef SHAREDSTORE_NO_SEED_NAMES
/* The seed's names. Define SHAREDSTORE_NO_SEED_NAMES before including this header if they collide with yours. */
#define INPROGRESS SHAREDSTORE_INPROGRESS
#define CANCELED SHAREDSTORE_CANCELED
#endif

/* Write policies of container_create_ex (the seed's write_policy). */
#define SHAREDSTORE_WRITE_ALL_MEMBERS 0
#define SHAREDSTORE_WRITE_CREATOR_ONLY 1

/* The seed's object_attr. size is a size_t: the seed's int cannot hold the size of an object of 2 GiB or more.
   data is where byte 0 of the object is mapped in this process; read it under object_get. (A program that declares
   the seed's struct itself, with an int size, still works for objects below 2 GiB on x86-64: data is at offset 8 in
   both, and the int receives the low half of the size_t.) */
struct object_attr {
    size_t size;
    void *data;
};

/* object_getinfo: object_attr plus what a binding needs. */
struct object_info {
    size_t size;
    void *data;
    size_t block_size; /* lock granularity: a get or write locks every block its range touches */
    int writable;      /* 0 when this member maps the object read-only (creator-only container) */
};

/* container_create_ex options. A zeroed struct means the defaults of container_create. */
struct container_options {
    int write_policy;         /* SHAREDSTORE_WRITE_ALL_MEMBERS (default) or SHAREDSTORE_WRITE_CREATOR_ONLY */
    size_t block_size;        /* 0: the broker's default (1 MiB); else a power of two, 4 KiB to 1 GiB */
    const char *durable_path; /* NULL: memory only. Else an existing, empty directory the caller may write: the
                                 container is durable (written back there, restored when the broker restarts) */
    int max_members;          /* 0: 63. Else 1 to 4095: member processes admitted at once; the next join gets
                                 NO_RESOURCES. (Added with protocol 5: programs built against the three-field struct
                                 must be recompiled.) */
};

/* ---------------------------------------------------------------------------------------------------------------
 * CONTAINER OPERATIONS
 * ------------------------------------------------------------------------------------------------------------- */

/* Creates container `container` shared with Unix group `groupid` and joins it. Returns its id (>= 0).
 * Errors: ALREADY_EXISTS; PERMISSION (the caller is not in the group and not root); INVALID_ARGUMENT (NULL or empty
 * name, name over 255 bytes); NO_RESOURCES (id table full; durable: the metadata could not be written);
 * BROKER_UNAVAILABLE; VERSION_MISMATCH. */
int container_create(SHAREDSTORE_NAME container, int groupid);

/* container_create with options (write policy, block size, durable directory, max members); `options` may be NULL.
 * Errors: those of container_create; INVALID_ARGUMENT (write_policy, block_size, max_members outside 0-4095;
 * durable_path not a directory);
 * NOT_FOUND (durable_path missing); PERMISSION (durable_path not writable by the caller); ALREADY_EXISTS
 * (durable_path already holds a container). */
int container_create_ex(SHAREDSTORE_NAME container, int groupid, const struct container_options *options);

/* Refuses new joins at once, blocks until every other member process has left, then frees the container and its
 * objects. Closes `container_id` and every object id opened through it. Returns 0.
 * Errors: NOT_FOUND (no such id); BUSY (this process still uses it: a lease not put, an asynchronous read running,
 * or another thread inside a call on it or its objects); PERMISSION (only the creator or root destroys);
 * DESTROYED (already being destroyed); BROKER_UNAVAILABLE. */
int container_destroy(int container_id);

/* container_destroy that gives up after `timeout_ms`: TIMEOUT, and the container is put back as it was (joinable). */
int container_destroy_timed(int container_id, int timeout_ms);

/* Joins an existing container. Returns its id (>= 0).
 * Errors: NOT_FOUND (no such container); DESTROYED (a destroy is in progress); PERMISSION (not in the container's
 * group, not its creator, not root); NO_RESOURCES (63 member processes already); ALREADY_EXISTS (this process is
 * already a member); INVALID_ARGUMENT (NULL or empty name); BROKER_UNAVAILABLE. */
int container_join(SHAREDSTORE_NAME container);

/* container_join that waits up to `timeout_ms` for the container to be created (the seed's reader loop
 * `while ((con = container_join("con")) < 0);`). Errors: those of container_join, TIMEOUT instead of NOT_FOUND. */
int container_join_timed(SHAREDSTORE_NAME container, int timeout_ms);

/* Not in the seed: joins the container as soon as it exists, waiting up to `timeout_ms` (-1: for ever). The broker
 * pushes the news of its creation; nothing polls and the waiting thread sleeps. Returns the container id (>= 0).
 * Errors: those of container_join, TIMEOUT instead of NOT_FOUND. (container_join_timed now does the same.) */
int container_join_wait(SHAREDSTORE_NAME container, int timeout_ms);

/* Stops using the container: leaves every object joined through it, then the container. Returns 0.
 * Errors: NOT_FOUND (no such id); BUSY (as for container_destroy; nothing is left). After the broker died it
 * succeeds (the broker released everything). */
int container_leave(int container_id);

/* Not in the seed. Returns once every write to the container's objects that completed before the call (object_write,
 * and object_awrite operations whose status was 0) is on disk. A memory-only container returns 0 at once.
 * Errors: NOT_FOUND; NO_RESOURCES (the disk refused a write; the memory copy is intact and stays dirty); TIMEOUT
 * (timed form: clients kept blocks write-locked); BROKER_UNAVAILABLE. */
int container_flush(int container_id);
int container_flush_timed(int container_id, int timeout_ms);

/* ---------------------------------------------------------------------------------------------------------------
 * OBJECT OPERATIONS
 * ------------------------------------------------------------------------------------------------------------- */

/* Allocates `size` bytes (zeroed) for object `object` in the container and joins it. The memory is reserved before
 * this returns, so running out is this call's NO_RESOURCES, never a fault later. Returns the object id (>= 0).
 * Errors: NOT_FOUND (no such container id); ALREADY_EXISTS; NO_RESOURCES (the broker's memory limit, tmpfs full;
 * durable: disk full); PERMISSION (creator-only container and the caller is not its creator); INVALID_ARGUMENT (size 0
 * or above 1 TiB, NULL/empty/long name); DESTROYED; BROKER_UNAVAILABLE. */
int object_create(int container_id, SHAREDSTORE_NAME object, size_t size);

/* Refuses new joins at once, blocks while other member processes use the object, then frees it. Closes
 * `object_id`; other ids of the same object in this process then return NOT_FOUND (leave them). Returns 0.
 * Errors: NOT_FOUND; BUSY (this process still uses it, through this id or another id of the same object: lease,
 * asynchronous read, another thread's call; a get through another id that overlaps the destroy is NOT_FOUND);
 * PERMISSION (creator-only container); DESTROYED (already being destroyed); BROKER_UNAVAILABLE. */
int object_destroy(int object_id);

/* object_destroy that gives up after `timeout_ms`: TIMEOUT, and the object is put back (joinable again). */
int object_destroy_timed(int object_id, int timeout_ms);

/* Joins an existing object of the container. Returns the object id (>= 0).
 * Errors: NOT_FOUND (no such container id or object name); DESTROYED; INVALID_ARGUMENT; BROKER_UNAVAILABLE. */
int object_join(int container_id, SHAREDSTORE_NAME object);

/* Not in the seed: object_join that waits up to `timeout_ms` (-1: for ever) for the object to be created in the
 * container; the broker pushes the news, nothing polls. Errors: those of object_join, TIMEOUT instead of NOT_FOUND. */
int object_join_wait(int container_id, SHAREDSTORE_NAME object, int timeout_ms);

/* Not in the seed: the object's version (>= 0): 0 when created, one more for every completed write (object_write,
 * an object_awrite the broker applied, a durable restore), advanced only once the data is in place. One load from
 * shared memory, no system call. Errors (negative): NOT_FOUND. */
int64_t object_version(int object_id);

/* Not in the seed: waits until the object's version differs from `last_version` and returns the new one (at once when
 * it already differs). Spins about 30 us, then sleeps on a futex in the object's shared memory; a writer makes the
 * wake system call only when someone sleeps. Errors (negative): NOT_FOUND; TIMEOUT; BROKER_UNAVAILABLE. */
int64_t object_wait(int object_id, int64_t last_version, int timeout_ms);

/* Stops using the object; its operation ids end with it (object_return on them then returns NOT_FOUND). This
 * process's pending asynchronous writes to it are applied first. Returns 0.
 * Errors: NOT_FOUND; BUSY (a lease not put, an asynchronous read running, another thread's call on it). */
int object_leave(int object_id);

/* Fills `obj` with the object's size and the address of its data in this process (valid until the object or its
 * container is left; read it under object_get). Returns 0. Errors: NOT_FOUND; INVALID_ARGUMENT (obj is NULL);
 * BROKER_UNAVAILABLE (the broker died: the id serves no new call). */
int object_getattr(int object_id, struct object_attr *obj);

/* Not in the seed: object_getattr plus block size and whether this member may write. Errors: as object_getattr. */
int object_getinfo(int object_id, struct object_info *info);

/* ---------------------------------------------------------------------------------------------------------------
 * OBJECT MANIPULATION AND SYNCHRONIZATION
 * ------------------------------------------------------------------------------------------------------------- */

/* Copies `size` bytes of `buf` to the object at `offset` with every block of the range write-locked: excluded
 * against gets and writes of other threads and processes. Returns 0 once the bytes are in the object. `buf` is read
 * during the call only. One call writes less than 2 GiB.
 * Errors: NOT_FOUND; INVALID_ARGUMENT (range outside the object, size 2 GiB or more, buf NULL); PERMISSION
 * (read-only member); WOULD_DEADLOCK (this process holds a lease on a block of the range); TIMEOUT (timed form);
 * BROKER_UNAVAILABLE. On any error nothing was written and nothing is held. */
int object_write(int object_id, size_t offset, char *buf, size_t size);
int object_write_timed(int object_id, size_t offset, char *buf, size_t size, int timeout_ms);

/* Asynchronous object_write: returns an operation id (>= 0) as soon as `buf` has been copied into shared memory, so
 * `buf` need stay valid ONLY UNTIL THIS CALL RETURNS. A write of more than 84 bytes whose blocks are all free, while
 * nothing this process submitted is still pending, is copied into the object by this call itself under the blocks'
 * write locks (one copy, as object_write) and its operation is already completed when the call returns
 * (object_opstatus 0, object_opcancel NOT_CANCELED, object_return the byte count). Otherwise the payload is staged
 * and the broker applies it under the blocks' write locks. The call never waits for readers or other writers, and
 * this process's writes apply in submission order either way. Follow it with object_opstatus / object_opwait /
 * object_opcancel, and end the id with object_return.
 * Errors: NOT_FOUND; INVALID_ARGUMENT (range outside the object, size 2 GiB or more, buf NULL); PERMISSION
 * (read-only member); WOULD_DEADLOCK (a write larger than a quarter of the staging area (2 MiB by default) over
 * blocks this process holds leases on); NO_RESOURCES (131072 asynchronous operations outstanding: return finished ones);
 * BROKER_UNAVAILABLE. Nothing was submitted on any error. A full submission ring makes the call wait. */
int object_awrite(int object_id, size_t offset, char *buf, size_t size);

/* Asynchronous read of `size` bytes at `offset` into `buf`, under the blocks' read locks, on this process's own
 * threads. Returns an operation id (>= 0). `buf` must stay valid UNTIL THE OPERATION HAS ENDED (object_opstatus or
 * object_opwait no longer returns INPROGRESS). One call reads less than 2 GiB.
 * Errors: as object_awrite, without PERMISSION and WOULD_DEADLOCK. The object cannot be left (BUSY) while it runs. */
int object_aread(int object_id, size_t offset, char *buf, size_t size);

/* Status of an asynchronous operation, read from shared memory (no broker round trip): 0 (completed), INPROGRESS,
 * CANCELED, or a negative error for a failed operation (its ErrorCode: NOT_FOUND if the object was destroyed
 * meanwhile, BROKER_UNAVAILABLE if the broker died, ...). An object_get id reads 0 (the lease is in effect).
 * Errors for the id itself: NOT_FOUND (not an operation of this process, already returned, or its object was left;
 * also an awrite more than 16384 submissions old whose status entry was reused). */
int object_opstatus(int operation_id);

/* Not in the seed: waits up to `timeout_ms` (negative: forever) for the operation to end and returns what
 * object_opstatus then returns. Errors: NOT_FOUND (as object_opstatus); TIMEOUT (still in progress). */
int object_opwait(int operation_id, int timeout_ms);

/* Cancels an asynchronous operation that has not started to apply. Returns 0 when it will never apply (canceled now
 * or before), SHAREDSTORE_NOT_CANCELED (1) when it is being applied or done: it then completes whole, never by half.
 * Errors: NOT_FOUND (as object_opstatus); INVALID_ARGUMENT (an object_get id). */
int object_opcancel(int operation_id);

/* The result of a finished asynchronous operation, and the end of its id (as aio_return): bytes transferred
 * (>= 0) when it completed, CANCELED's error SHAREDSTORE_E_CANCELED when canceled, or its negative error when it
 * failed. Errors: BUSY (still in progress; the id stays valid); NOT_FOUND (as object_opstatus); INVALID_ARGUMENT (an
 * object_get id: end it with object_put). */
int object_return(int operation_id);

/* Direct access to [offset, offset+size) of the object's memory, with no copy: *buf points into the shared mapping
 * itself. Every block the range touches is read-locked (writer priority: a get waits while a writer waits), so
 * object_write/object_awrite of any process cannot change the range until object_put. Returns an operation id (>= 0)
 * for object_put. Keep the object and container joined while using *buf (leaving them is refused with BUSY until the
 * put). A read-only member's mapping is read-only: writing through *buf faults. size may be 0.
 * Errors: NOT_FOUND; INVALID_ARGUMENT (range outside the object, buf NULL); TIMEOUT (timed form; nothing is held);
 * NO_RESOURCES (131072 leases outstanding in this process); BROKER_UNAVAILABLE.
 * Cost: a get of a range inside one free block, and every put, run in C without entering the library's runtime
 * (three locked instructions per pair); any other get (a wait, several blocks) runs through it. */
int object_get(int object_id, size_t offset, size_t size, char **buf);
int object_get_timed(int object_id, size_t offset, size_t size, char **buf, int timeout_ms);

/* Ends an object_get: releases the range's read locks. *buf must not be used afterwards. Returns 0.
 * Errors: NOT_FOUND (not a lease of this process: never got, or already put - a second put changes nothing);
 * INVALID_ARGUMENT (an asynchronous operation's id). Succeeds after the broker died. */
int object_put(int operation_id);

/* ---------------------------------------------------------------------------------------------------------------
 * THE LIBRARY
 * ------------------------------------------------------------------------------------------------------------- */

/* A static description of any value the calls return (0, INPROGRESS, CANCELED, or a negative error). Never NULL;
 * never free it. */
const char *sharedstore_strerror(int value);

/* The message of this thread's last failed call (empty if none failed yet): valid until this thread's next failing
 * call. Never free it. */
const char *sharedstore_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* SHAREDSTORE_H */
