using System.Runtime.InteropServices;
using SharedStore.Native.Handles;

namespace SharedStore.Native.Exports;

/// <summary>
/// The managed half of object_get and object_put, whose C half is <c>native/fastpath.c</c> (linked into this same
/// library): the C half takes an uncontended one-block lease and does every put without entering the runtime, and
/// calls these for everything else. They are linked by name but not exported from libsharedstore.so (the project's
/// ExportFastPathSymbols target removes the <c>ssn_</c> names from the export list).
/// </summary>
internal static unsafe class FastPathExports
{
    /// <summary>The tables the C half shares with <see cref="FastPath"/> (null if they could not be allocated: then
    /// every get and put goes through the managed half).</summary>
    [UnmanagedCallersOnly(EntryPoint = "ssn_fast_tables")]
    public static FastTables* Tables()
    {
        try
        {
            return FastPath.Tables;
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    /// <summary>object_get when the C half cannot take the lease at once: a wait, a range over several blocks, a
    /// closing or unknown id, bad arguments, a lost broker. The C half has announced the get in its lease slot before
    /// calling (<see cref="ObjectHandle"/>), unless <paramref name="haveLease"/> is 0 (every lease is out). On success
    /// the blocks [first, first + count) are read-held with <paramref name="slot"/> and <c>*buf</c> points at the
    /// range; the C half records them in the lease and releases them at object_put.</summary>
    [UnmanagedCallersOnly(EntryPoint = "ssn_get_slow")]
    public static int GetSlow(int objectId, nuint offset, nuint size, byte** buf, int timeoutMs, int haveLease, int* slot, byte** first, int* count, int* recordSize)
    {
        try
        {
            var h = Calls.Objects.Find(objectId);
            if (h is null)
            {
                return Calls.NotFound("object", objectId);
            }

            if (buf is null)
            {
                return Calls.Invalid("object_get: buf is NULL");
            }

            if (!Calls.ToLong(offset, out long off) || !Calls.ToLong(size, out long len))
            {
                return Calls.Invalid($"object_get: offset {offset} or size {size} is outside any object");
            }

            if (haveLease == 0)
            {
                return Errors.Fail(ErrorCode.NoResources, $"all {FastPath.LeaseCapacity} lease ids of this process are outstanding or cached by its threads (each thread that gets keeps up to 64)");
            }

            if (h.IsClosing) // after the announcement: see ObjectHandle
            {
                return Calls.NotFound("object", objectId);
            }

            if (h.BrokerLost)
            {
                return Calls.BrokerLost();
            }

            var range = h.Object.AcquireLease(off, len, Calls.Timeout(timeoutMs), default, out _, out _);
            long blocks = range.Last - range.First + 1;
            if (blocks > int.MaxValue)
            {
                range.ReleaseRead();
                return Calls.Invalid($"object_get: a range of {blocks} blocks is more than one lease can hold");
            }

            var view = h.Object.View;
            *slot = view.Slot;
            *first = (byte*)view.Record(range.First);
            *count = (int)blocks;
            *recordSize = view.RecordSize;
            *buf = view.Data + off;
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }

    /// <summary>object_put of an id the C half could not claim: the error and its message.</summary>
    [UnmanagedCallersOnly(EntryPoint = "ssn_put_error")]
    public static int PutError(int operationId)
    {
        try
        {
            if (!FastPath.IsLeaseId(operationId)
                && OperationTable.TryRead(operationId, out var kind, out _, out _, out _) && kind == OperationKind.Async)
            {
                return Calls.Invalid($"object_put: {operationId} is an asynchronous operation; end it with object_return");
            }

            return Errors.Fail(ErrorCode.NotFound, $"object_put: {operationId} is not a lease this process holds (never got, or already put)");
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }
}
