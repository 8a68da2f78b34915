using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// Where an object's memory and lock records go (docs/ARCHITECTURE.md §3): first fit in a shared segment of its
/// container below the dedicated threshold, else a segment of its own; every byte charged to the memory limit and
/// its creator's quota (<see cref="MemoryBudget"/>) before anything is made, and reserved (fallocate) so running
/// out is a clean NoResources, never a SIGBUS later. Called under the model lock; takes the budget's lock (a leaf).
/// </summary>
internal sealed class SegmentPlacement(BrokerModel model, BrokerOptions options, MemoryBudget memory, BrokerIdentity identity)
{
    /// <summary>Allocates and reserves an object's memory and lock records in <paramref name="c"/> (no uses yet).
    /// Under the model lock. <paramref name="reserve"/> false: the caller reserves the memory before anyone may use
    /// the object (restore does it beside its reads, <see cref="DurableStore.RestoreObject"/>).</summary>
    public ObjectState AllocateObject(ContainerState c, string name, long size, uint chargeUid, bool reserve = true)
    {
        long blocks = (size + c.BlockSize - 1) / c.BlockSize;
        long pageBytes = LockSegmentDescriptor.RoundUpToPage(size);
        Segment? seg = null;
        long dataOffset = -1, record = -1;
        if (size < options.DedicatedThreshold)
        {
            foreach (var s in c.Segments)
            {
                if (!s.Dedicated && s.TryAllocate(size, blocks, out dataOffset, out record))
                {
                    seg = s;
                    break;
                }
            }
        }

        long newSegmentBytes = 0;
        bool dedicated = size >= options.DedicatedThreshold;
        if (seg is null)
        {
            newSegmentBytes = LockSegmentDescriptor.LengthFor(dedicated ? blocks : SharedRecords(c), c.RecordSize);
        }

        // Charged before anything is made: a refusal leaves nothing behind. The object's pages go to its creator's uid,
        // and so does a segment made for it (its lock table).
        memory.Charge(chargeUid, pageBytes + newSegmentBytes, $"object '{name}'");
        bool freshSegment = seg is null;
        if (seg is null)
        {
            try
            {
                seg = dedicated
                    ? new Segment(model.NextSegmentId(), c.Id, pageBytes, blocks, c.BlockSize, c.Lines, dedicated: true, identity)
                    : new Segment(model.NextSegmentId(), c.Id, options.SegmentCapacity, SharedRecords(c), c.BlockSize, c.Lines, dedicated: false, identity);
            }
            catch (SharedStoreException e)
            {
                memory.Release(chargeUid, pageBytes + newSegmentBytes);
                throw new BrokerError(e.Code, e.Message);
            }

            seg.ChargedUid = chargeUid;
            c.Segments.Add(seg);
            if (!seg.TryAllocate(size, blocks, out dataOffset, out record))
            {
                throw new BrokerError(ErrorCode.Internal, "a fresh segment could not hold the object");
            }
        }

        // Reserve the memory now: running out is a clean error here, never a SIGBUS in a client later. Pages that
        // earlier objects of a shared segment reserved and did not give back (partly used pages) are reserved already.
        bool freshPages = !seg.PagesReserved(dataOffset, size);
        if (reserve && freshPages && !Memfd.Reserve(seg.DataFd, dataOffset, size, out int errno))
        {
            seg.Free(dataOffset, size, record, blocks);
            memory.Release(chargeUid, pageBytes);
            if (freshSegment)
            {
                ReleaseSegment(c, seg); // made for this object alone: do not keep it (or its accounting) around
            }

            throw new BrokerError(ErrorCode.NoResources, $"cannot reserve {size} bytes of shared memory: {Interop.Libc.StrError(errno)}");
        }

        if (reserve && freshPages)
        {
            seg.MarkReserved(dataOffset, size);
        }

        var o = new ObjectState
        {
            Id = model.NextObjectId(),
            Name = name,
            Size = size,
            Segment = seg,
            DataOffset = dataOffset,
            RecordIndex = record,
            BlockCount = blocks,
            ChargedUid = chargeUid,
            FreshPages = freshPages,
        };
        seg.ObjectCount++;
        c.Objects.Add(o.Name, o);
        c.ObjectsById.Add(o.Id, o);
        c.Bytes += size;
        return o;
    }

    /// <summary>Under the model lock: gives back an object's memory, records and charge (it is out of the container's
    /// tables already); a dedicated segment dies with its object.</summary>
    public void FreeObject(ContainerState c, ObjectState o)
    {
        memory.Release(o.ChargedUid, LockSegmentDescriptor.RoundUpToPage(o.Size));
        o.Segment.Free(o.DataOffset, o.Size, o.RecordIndex, o.BlockCount);
        if (--o.Segment.ObjectCount == 0 && o.Segment.Dedicated)
        {
            // A dedicated segment dies with its object; clients that still map it keep their mapping until they drop it.
            ReleaseSegment(c, o.Segment);
        }
    }

    /// <summary>Under the model lock: frees every segment of a container whose objects are gone.</summary>
    public void FreeSegments(ContainerState c)
    {
        foreach (var s in c.Segments)
        {
            memory.Release(s.ChargedUid, s.LockLength);
            s.Dispose();
        }

        c.Segments.Clear();
    }

    /// <summary>Records of a shared segment of <paramref name="c"/>: the configured number for one reader line, and
    /// proportionally fewer (at least 4 096) for records of more lines, so that a container made for many members
    /// does not reserve lock memory for 65 536 blocks of 1 KiB-sized records per 64 MiB of small objects.</summary>
    private long SharedRecords(ContainerState c) => Math.Max(4096, options.LockRecordsPerSegment / c.Lines);

    private void ReleaseSegment(ContainerState c, Segment seg)
    {
        c.Segments.Remove(seg);
        memory.Release(seg.ChargedUid, seg.LockLength);
        seg.Dispose();
    }
}
