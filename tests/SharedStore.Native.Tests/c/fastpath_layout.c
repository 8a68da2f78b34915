/* Prints the offsets and constants of src/SharedStore.Native/native/fastpath.h, one "name value" per line, for
 * FastPathLayoutTests to compare with the C# descriptors (BlockLockDescriptor, FastPath). */
#include <stddef.h>
#include <stdio.h>

#include "fastpath.h"

#define P(name, value) printf("%s %lld\n", name, (long long)(value))

int main(void)
{
    P("rec.owner", SS_REC_OWNER);
    P("rec.waiting", SS_REC_WAITING);
    P("rec.seq", SS_REC_SEQ);
    P("rec.reader_lines", SS_REC_READER_LINES);
    P("rec.readers", SS_REC_READERS);
    P("owner.active", SS_OWNER_ACTIVE);
    P("max_holds", SS_MAX_HOLDS);
    P("seq.sleepers", SS_SEQ_SLEEPERS);
    P("id.index_bits", SS_INDEX_BITS);
    P("id.generation_mask", SS_GENERATION_MASK);
    P("lease.base", SS_LEASE_BASE);
    P("lease.capacity", SS_LEASE_CAPACITY);
    P("lease.free", SS_LEASE_FREE);
    P("lease.announced", SS_LEASE_ANNOUNCED);
    P("lease.putting", SS_LEASE_PUTTING);
    P("entry.chunk_bits", SS_ENTRY_CHUNK_BITS);
    P("entry.size", sizeof(struct ss_object_entry));
    P("entry.id", offsetof(struct ss_object_entry, id));
    P("entry.slot", offsetof(struct ss_object_entry, slot));
    P("entry.data", offsetof(struct ss_object_entry, data));
    P("entry.records", offsetof(struct ss_object_entry, records));
    P("entry.size_field", offsetof(struct ss_object_entry, size));
    P("entry.lost", offsetof(struct ss_object_entry, lost));
    P("entry.record_size", offsetof(struct ss_object_entry, record_size));
    P("entry.block_shift", offsetof(struct ss_object_entry, block_shift));
    P("entry.closed", offsetof(struct ss_object_entry, closed));
    P("lease.size", sizeof(struct ss_lease));
    P("lease.state", offsetof(struct ss_lease, state));
    P("lease.generation", offsetof(struct ss_lease, generation));
    P("lease.object", offsetof(struct ss_lease, object));
    P("lease.slot", offsetof(struct ss_lease, slot));
    P("lease.first", offsetof(struct ss_lease, first));
    P("lease.count", offsetof(struct ss_lease, count));
    P("lease.record_size", offsetof(struct ss_lease, record_size));
    P("tables.size", sizeof(struct ss_tables));
    P("tables.entry_chunks", offsetof(struct ss_tables, entry_chunks));
    P("tables.leases", offsetof(struct ss_tables, leases));
    P("tables.lease_high_water", offsetof(struct ss_tables, lease_high_water));
    return 0;
}
