using System.Runtime.InteropServices;
using SharedStore.Native.Handles;

namespace SharedStore.Native.Exports;

/// <summary>Argument conversions and the tables every export shares.</summary>
internal static unsafe class Calls
{
    public static readonly HandleTable<ContainerHandle> Containers = new();
    public static readonly HandleTable<ObjectHandle> Objects = new();

    /// <summary>The C timeout convention: negative = wait forever, else milliseconds.</summary>
    public static TimeSpan Timeout(int milliseconds) =>
        milliseconds < 0 ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(milliseconds);

    /// <summary>A C string argument, decoded exactly; null when the pointer is null (the caller returns
    /// InvalidArgument). Bytes that are not UTF-8 throw ArgumentException (InvalidArgument): decoding them with
    /// replacement, as Marshal.PtrToStringUTF8 does, would make "Z\xFF" and "Z\xFE" the one name "Z\uFFFD" (issue 13,
    /// finding 7; docs/ARCHITECTURE.md §6).</summary>
    public static string? Name(sbyte* name)
    {
        if (name is null)
        {
            return null;
        }

        var bytes = MemoryMarshal.CreateReadOnlySpanFromNullTerminated((byte*)name);
        return System.Text.Unicode.Utf8.IsValid(bytes)
            ? System.Text.Encoding.UTF8.GetString(bytes)
            : throw new ArgumentException("the string is not valid UTF-8 (names and paths are taken byte for byte, as UTF-8)");
    }

    public static int NotFound(string what, int id) => Errors.Fail(ErrorCode.NotFound, $"no open {what} has id {id}");

    public static int Invalid(string message) => Errors.Fail(ErrorCode.InvalidArgument, message);

    public static int BrokerLost() =>
        Errors.Fail(ErrorCode.BrokerUnavailable, "the broker died or stopped; leave this id, then create or join again");

    /// <summary>A size_t offset or length as a long; false when it does not fit (the caller returns InvalidArgument).</summary>
    public static bool ToLong(nuint value, out long result)
    {
        result = (long)value;
        return value <= long.MaxValue;
    }

    /// <summary>The checks object_write, object_awrite and object_aread share, in their order: offset and size fit
    /// (one call moves less than 2 GiB: the client library takes spans), buf is not NULL, the broker is alive.
    /// Returns 0, or the call's negative error.</summary>
    public static int CheckTransfer(string call, ObjectHandle h, nuint offset, byte* buf, nuint size, out long off)
    {
        if (!ToLong(offset, out off) || size > int.MaxValue)
        {
            return Invalid($"{call}: offset {offset} or size {size} too large (one call moves less than 2 GiB)");
        }

        if (buf is null && size != 0)
        {
            return Invalid($"{call}: buf is NULL");
        }

        return h.BrokerLost ? BrokerLost() : 0;
    }

    /// <summary>Closes the ids of a container's objects for a leave or destroy: all or none.</summary>
    public static bool TryCloseObjects(ObjectHandle[] objects)
    {
        for (int i = 0; i < objects.Length; i++)
        {
            if (!objects[i].TryClose())
            {
                for (int j = 0; j < i; j++)
                {
                    objects[j].Reopen();
                }

                return false;
            }
        }

        return true;
    }

    /// <summary>Gives back the uses of <paramref name="objects"/>' asynchronous reads that have finished but whose
    /// completion continuation has not run yet (see <see cref="ReadUse"/>); true if there was any.</summary>
    public static bool ReleaseFinishedReads(ObjectHandle[] objects)
    {
        bool any = false;
        foreach (var (_, op, use) in OperationTable.LiveOperationsOf(new HashSet<ObjectHandle>(objects)))
        {
            if (use is not null && op.Status != AsyncStatus.InProgress)
            {
                use.Release();
                any = true;
            }
        }

        return any;
    }

    public static void Reopen(ObjectHandle[] objects)
    {
        foreach (var o in objects)
        {
            o.Reopen();
        }
    }

    /// <summary>Retires every operation id of <paramref name="objects"/> and frees their ids (they were left).</summary>
    public static void Forget(ObjectHandle[] objects)
    {
        if (objects.Length == 0)
        {
            return;
        }

        var set = new HashSet<ObjectHandle>(objects);
        foreach (var (id, _, _) in OperationTable.LiveOperationsOf(set))
        {
            if (OperationTable.TryClaim(id, out var slot))
            {
                OperationTable.Return(slot);
            }
        }

        foreach (var o in objects)
        {
            Objects.Remove(o);
            o.Container.Remove(o);
        }
    }
}
