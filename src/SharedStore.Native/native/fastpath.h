/*
 * The tables that libsharedstore.so's C get/put path shares with its managed half (docs/ARCHITECTURE.md §12.1).
 * Both halves live in one process and one image; these are process-local, not shared memory. The managed mirror of
 * every struct is in src/SharedStore.Native/Handles/FastPath.cs, and FastPathLayoutTests pins the two against each
 * other (a C program prints this header's offsets; the test compares them with the C# descriptors).
 */
#ifndef SHAREDSTORE_FASTPATH_H
#define SHAREDSTORE_FASTPATH_H

#include <stdint.h>

/* The lock record (spec: BlockLockDescriptor, lock layout 3; docs/ARCHITECTURE.md §3.2). Only what a reader touches. */
#define SS_REC_OWNER 0          /* uint32: 0, or writer slot+1 (bits 0-12) | Active (bit 31) */
#define SS_REC_WAITING 8        /* uint64: bit g = some slot of reader line g waits to write */
#define SS_REC_SEQ 16           /* int32: futex word; bit 0 = there may be sleepers */
#define SS_REC_READER_LINES 24  /* uint64: bit g = reader line g may hold reads (set before every increment) */
#define SS_REC_READERS 64       /* reader lines: one byte per slot, count in bits 0-6, wait flag in bit 7 */
#define SS_OWNER_ACTIVE 0x80000000u
#define SS_MAX_HOLDS 0x7Fu
#define SS_SEQ_SLEEPERS 1

/* Operation ids (HandleId): bits 0-17 index, 18-30 generation. Indexes below SS_LEASE_BASE are the managed
 * operation table's (asynchronous operations); from SS_LEASE_BASE on they are this file's leases. */
#define SS_INDEX_BITS 18
#define SS_GENERATION_MASK ((1 << 13) - 1)
#define SS_LEASE_BASE (1 << 17)
#define SS_LEASE_CAPACITY (1 << 17)

/* ss_lease.state */
#define SS_LEASE_FREE 0
#define SS_LEASE_ANNOUNCED (-2)
#define SS_LEASE_PUTTING (-3)

/* An object id's entry, written by the managed half when the id is opened (fields first, then id with a release
 * store) and hidden (id = -1) when a close starts; the fields do not change while id holds a live id. */
struct ss_object_entry {
    int32_t id;                    /*  0: the live object id, or -1 */
    int32_t slot;                  /*  4: this process's lock slot in the container */
    uint8_t *data;                 /*  8: the object's byte 0 */
    uint8_t *records;              /* 16: the lock record of block 0 */
    uint64_t size;                 /* 24: bytes */
    const int32_t *lost;           /* 32: non-zero once the container's broker connection is lost */
    int32_t record_size;           /* 40: bytes from one block's record to the next */
    int32_t block_shift;           /* 44: log2(block size) */
    const int32_t *closed;         /* 48: non-zero once the object handle is closed (e.g. destroyed through another id) */
    uint64_t reserved;             /* 56 */
};                                 /* 64 */

/* A lease (an object_get not yet put). Written by the thread that owns the slot; the close scan reads state and
 * object only. */
struct ss_lease {
    int32_t state;                 /*  0: SS_LEASE_FREE, _ANNOUNCED, _PUTTING, or the live lease id */
    int32_t generation;            /*  4: of the next id made in this slot */
    int32_t object;                /*  8: index of the object id the get is on (the close scan's key) */
    int32_t slot;                  /* 12: the lock slot the blocks are held with */
    uint8_t *first;                /* 16: the lock record of the lease's first block */
    int32_t count;                 /* 24: blocks held (0 for an empty range) */
    int32_t record_size;           /* 28: bytes from one block's record to the next */
};                                 /* 32 */

#define SS_ENTRY_CHUNK_BITS 10
#define SS_ENTRY_CHUNK_COUNT ((1 << SS_INDEX_BITS) >> SS_ENTRY_CHUNK_BITS)

/* Allocated once by the managed half (ssn_fast_tables), never freed. */
struct ss_tables {
    struct ss_object_entry **entry_chunks;  /*  0: SS_ENTRY_CHUNK_COUNT chunk pointers, each published once */
    struct ss_lease *leases;                /*  8: SS_LEASE_CAPACITY leases, zeroed */
    int32_t lease_high_water;               /* 16: leases [0, high water) have been handed out at least once */
    int32_t reserved;                       /* 20 */
};                                          /* 24 */

#endif
