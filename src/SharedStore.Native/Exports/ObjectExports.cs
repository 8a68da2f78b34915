using System.Runtime.InteropServices;
using SharedStore.Native.Handles;

namespace SharedStore.Native.Exports;

/// <summary>C's <c>struct object_attr</c>: the seed's attributes with a <c>size_t</c> size (the seed's <c>int</c>
/// cannot hold objects of 2 GiB or more).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ObjectAttrNative
{
    public nuint Size;
    public void* Data;
}

/// <summary>C's <c>struct object_info</c>: <see cref="ObjectAttrNative"/> plus what a binding needs to know.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ObjectInfoNative
{
    public nuint Size;
    public void* Data;
    public nuint BlockSize;
    public int Writable;
}

/// <summary>object_create, object_join, object_leave, object_destroy, object_getattr and object_write. Calls on an
/// object id take a use of it (<see cref="Handle"/>) for their duration. object_get and object_put are in C
/// (native/fastpath.c, with their managed half in <see cref="FastPathExports"/>); a lease lives in its slot until
/// object_put, so leaving an object or its container while a lease is out is refused (Busy) instead of unmapping
/// memory under the caller's pointer.</summary>
internal static unsafe class ObjectExports
{
    [UnmanagedCallersOnly(EntryPoint = "object_create")]
    public static int Create(int containerId, sbyte* name, nuint size) => OpenCore(containerId, name, size, create: true);

    [UnmanagedCallersOnly(EntryPoint = "object_join")]
    public static int Join(int containerId, sbyte* name) => OpenCore(containerId, name, 0, create: false);

    [UnmanagedCallersOnly(EntryPoint = "object_join_wait")]
    public static int JoinWait(int containerId, sbyte* name, int timeoutMs) => OpenCore(containerId, name, 0, create: false, waitMs: timeoutMs);

    [UnmanagedCallersOnly(EntryPoint = "object_version")]
    public static long Version(int objectId) => VersionCore(objectId, wait: false, 0, 0);

    [UnmanagedCallersOnly(EntryPoint = "object_wait")]
    public static long Wait(int objectId, long lastVersion, int timeoutMs) => VersionCore(objectId, wait: true, lastVersion, timeoutMs);

    [UnmanagedCallersOnly(EntryPoint = "object_leave")]
    public static int Leave(int objectId) => CloseCore(objectId, destroy: false, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "object_destroy")]
    public static int Destroy(int objectId) => CloseCore(objectId, destroy: true, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "object_destroy_timed")]
    public static int DestroyTimed(int objectId, int timeoutMs) => CloseCore(objectId, destroy: true, Calls.Timeout(timeoutMs));

    [UnmanagedCallersOnly(EntryPoint = "object_getattr")]
    public static int GetAttr(int objectId, ObjectAttrNative* attr)
    {
        if (attr is null)
        {
            return Calls.Invalid("object_getattr: attr is NULL");
        }

        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        try
        {
            var a = h.Object.GetAttributes();
            attr->Size = (nuint)a.Size;
            attr->Data = (void*)a.DataAddress;
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
        finally
        {
            h.Exit();
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "object_getinfo")]
    public static int GetInfo(int objectId, ObjectInfoNative* info)
    {
        if (info is null)
        {
            return Calls.Invalid("object_getinfo: info is NULL");
        }

        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        try
        {
            var a = h.Object.GetAttributes();
            info->Size = (nuint)a.Size;
            info->Data = (void*)a.DataAddress;
            info->BlockSize = (nuint)h.Container.Container.BlockSize;
            info->Writable = h.Container.Container.CanWrite ? 1 : 0;
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
        finally
        {
            h.Exit();
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "object_write")]
    public static int Write(int objectId, nuint offset, byte* buf, nuint size) =>
        WriteCore(objectId, offset, buf, size, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "object_write_timed")]
    public static int WriteTimed(int objectId, nuint offset, byte* buf, nuint size, int timeoutMs) =>
        WriteCore(objectId, offset, buf, size, Calls.Timeout(timeoutMs));


    private static int OpenCore(int containerId, sbyte* namePtr, nuint size, bool create, int? waitMs = null)
    {
        var ch = Calls.Containers.Enter(containerId);
        if (ch is null)
        {
            return Calls.NotFound("container", containerId);
        }

        try
        {
            string? name = Calls.Name(namePtr);
            if (string.IsNullOrEmpty(name))
            {
                return Calls.Invalid("the object name is NULL or empty");
            }

            if (ch.Connection.Client.IsBrokerLost)
            {
                return Calls.BrokerLost();
            }

            SharedObject obj;
            if (create)
            {
                if (!Calls.ToLong(size, out long n) || n == 0)
                {
                    return Calls.Invalid($"object_create: size {size} is 0 or too large");
                }

                obj = ch.Container.CreateObject(name, n);
            }
            else
            {
                obj = waitMs is int ms ? ch.Container.WaitForObject(name, Calls.Timeout(ms)) : ch.Container.JoinObject(name);
            }

            var oh = new ObjectHandle(obj, ch);
            bool added;
            try
            {
                // The C path's entry goes live before the id can be found, so a close always finds it to hide.
                added = Calls.Objects.TryAdd(oh, FastPath.Publish);
            }
            catch
            {
                obj.Leave(); // the entry could not be made (out of memory): no id, no membership
                throw;
            }

            if (!added)
            {
                obj.Leave();
                return Errors.Fail(ErrorCode.NoResources, $"this process has {HandleId.Capacity} object ids open");
            }

            ch.Add(oh);
            return oh.Id;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
        finally
        {
            ch.Exit();
        }
    }

    private static int CloseCore(int objectId, bool destroy, TimeSpan timeout)
    {
        try
        {
            var h = Calls.Objects.Find(objectId);
            if (h is null)
            {
                return Calls.NotFound("object", objectId);
            }

            if (!h.TryClose() && !(Calls.ReleaseFinishedReads([h]) && h.TryClose()))
            {
                return Errors.Fail(ErrorCode.Busy, $"object {objectId} is in use by this process (a lease not put, an asynchronous read, or a call in progress)");
            }

            // A destroy frees the object under every id of this process that names it: those are closed too, all or
            // none, so that a get through another id is either seen by the close (Busy) or sees it (NotFound), and
            // never holds a lease on memory the broker then gives to another object. They are reopened afterwards:
            // their SharedObject is closed by the destroy, so their calls then say NotFound.
            var siblings = destroy ? h.Container.Objects().Where(o => o != h && o.Object.Id == h.Object.Id).ToArray() : [];
            if (siblings.Length > 0 && !Calls.TryCloseObjects(siblings))
            {
                h.Reopen();
                return Errors.Fail(ErrorCode.Busy, $"object {objectId} is in use by this process through another id (a lease not put, an asynchronous read, or a call in progress)");
            }

            try
            {
                if (destroy)
                {
                    if (h.BrokerLost)
                    {
                        h.Reopen();
                        return Calls.BrokerLost();
                    }

                    h.Object.Destroy(timeout);
                }
                else
                {
                    h.Object.Leave();
                }
            }
            catch (Exception e)
            {
                h.Reopen();
                return Errors.From(e);
            }
            finally
            {
                Calls.Reopen(siblings);
            }

            Calls.Forget([h]);
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }

    /// <summary>object_version (one load) and object_wait (SharedObject.WaitForChange): the version, or -(error).</summary>
    private static long VersionCore(int objectId, bool wait, long lastVersion, int timeoutMs)
    {
        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        try
        {
            return wait ? h.Object.WaitForChange(lastVersion, Calls.Timeout(timeoutMs)) : h.Object.Version;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
        finally
        {
            h.Exit();
        }
    }

    private static int WriteCore(int objectId, nuint offset, byte* buf, nuint size, TimeSpan timeout)
    {
        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        try
        {
            int rc = Calls.CheckTransfer("object_write", h, offset, buf, size, out long off);
            if (rc != 0)
            {
                return rc;
            }

            h.Object.Write(off, new ReadOnlySpan<byte>(buf, (int)size), timeout);
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
        finally
        {
            h.Exit();
        }
    }

}
