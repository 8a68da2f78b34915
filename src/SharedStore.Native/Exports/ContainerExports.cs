using System.Runtime.InteropServices;
using SharedStore.Native.Handles;

namespace SharedStore.Native.Exports;

/// <summary>C's <c>struct container_options</c> (include/sharedstore.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ContainerOptionsNative
{
    public int WritePolicy;
    public nuint BlockSize;
    public sbyte* DurablePath;
    public int MaxMembers;
}

/// <summary>container_create, container_join, container_leave, container_destroy, container_flush and their timed
/// and extended forms. Every export returns a non-negative id or 0 on success and <c>-(int)ErrorCode</c> on failure;
/// none lets an exception through.</summary>
internal static unsafe class ContainerExports
{
    [UnmanagedCallersOnly(EntryPoint = "container_create")]
    public static int Create(sbyte* name, int groupId) => CreateCore(name, groupId, null);

    [UnmanagedCallersOnly(EntryPoint = "container_create_ex")]
    public static int CreateEx(sbyte* name, int groupId, ContainerOptionsNative* options) => CreateCore(name, groupId, options);

    [UnmanagedCallersOnly(EntryPoint = "container_join")]
    public static int Join(sbyte* name) => JoinCore(name, waitMilliseconds: null);

    [UnmanagedCallersOnly(EntryPoint = "container_join_timed")]
    public static int JoinTimed(sbyte* name, int timeoutMs) => JoinCore(name, timeoutMs);

    [UnmanagedCallersOnly(EntryPoint = "container_join_wait")]
    public static int JoinWait(sbyte* name, int timeoutMs) => JoinCore(name, timeoutMs);

    [UnmanagedCallersOnly(EntryPoint = "container_leave")]
    public static int Leave(int containerId) => CloseCore(containerId, destroy: false, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "container_destroy")]
    public static int Destroy(int containerId) => CloseCore(containerId, destroy: true, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "container_destroy_timed")]
    public static int DestroyTimed(int containerId, int timeoutMs) => CloseCore(containerId, destroy: true, Calls.Timeout(timeoutMs));

    [UnmanagedCallersOnly(EntryPoint = "container_flush")]
    public static int Flush(int containerId) => FlushCore(containerId, System.Threading.Timeout.InfiniteTimeSpan);

    [UnmanagedCallersOnly(EntryPoint = "container_flush_timed")]
    public static int FlushTimed(int containerId, int timeoutMs) => FlushCore(containerId, Calls.Timeout(timeoutMs));

    private static int CreateCore(sbyte* namePtr, int groupId, ContainerOptionsNative* o)
    {
        try
        {
            string? name = Calls.Name(namePtr);
            if (string.IsNullOrEmpty(name))
            {
                return Calls.Invalid("container_create: the name is NULL or empty");
            }

            var options = new ContainerOptions();
            if (o is not null)
            {
                if (o->WritePolicy is not (0 or 1))
                {
                    return Calls.Invalid($"container_create_ex: write_policy {o->WritePolicy} is neither 0 (all members) nor 1 (creator only)");
                }

                if (o->BlockSize > int.MaxValue)
                {
                    return Calls.Invalid($"container_create_ex: block_size {o->BlockSize} is above 1 GiB");
                }

                options.MaxMembers = o->MaxMembers; // outside 0-4095: CreateContainer's ArgumentOutOfRangeException, INVALID_ARGUMENT
                options.WritePolicy = (WritePolicy)o->WritePolicy;
                options.BlockSize = (int)o->BlockSize;
                options.DurablePath = Calls.Name(o->DurablePath);
            }

            var connection = Connection.Current();
            var container = connection.Client.CreateContainer(name, groupId, options);
            return Register(container, connection);
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }

    private static int JoinCore(sbyte* namePtr, int? waitMilliseconds)
    {
        try
        {
            string? name = Calls.Name(namePtr);
            if (string.IsNullOrEmpty(name))
            {
                return Calls.Invalid("container_join: the name is NULL or empty");
            }

            var connection = Connection.Current();
            var container = waitMilliseconds is int ms
                ? connection.Client.WaitForContainer(name, Calls.Timeout(ms)) // pushed by the broker: no polling
                : connection.Client.JoinContainer(name);
            return Register(container, connection);
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }

    private static int Register(Container container, Connection connection)
    {
        var handle = new ContainerHandle(container, connection);
        connection.AddContainer();
        if (!Calls.Containers.TryAdd(handle))
        {
            connection.RemoveContainer();
            container.Leave();
            return Errors.Fail(ErrorCode.NoResources, $"this process has {HandleId.Capacity} container ids open");
        }

        return handle.Id;
    }

    /// <summary>Leave or destroy: closes the container id and every object id opened through it, all or none (Busy
    /// while any of them is in use), then asks the client library.</summary>
    private static int CloseCore(int containerId, bool destroy, TimeSpan timeout)
    {
        try
        {
            var h = Calls.Containers.Find(containerId);
            if (h is null)
            {
                return Calls.NotFound("container", containerId);
            }

            if (!h.TryClose())
            {
                return Errors.Fail(ErrorCode.Busy, $"container {containerId} is in use by another call of this process");
            }

            var objects = h.Objects();
            if (!Calls.TryCloseObjects(objects) && !(Calls.ReleaseFinishedReads(objects) && Calls.TryCloseObjects(objects)))
            {
                h.Reopen();
                return Errors.Fail(ErrorCode.Busy, $"an object of container {containerId} is in use by this process (a lease not put, an asynchronous read, or a call in progress)");
            }

            try
            {
                if (destroy)
                {
                    if (h.Connection.Client.IsBrokerLost)
                    {
                        Calls.Reopen(objects);
                        h.Reopen();
                        return Calls.BrokerLost();
                    }

                    h.Container.Destroy(timeout);
                }
                else
                {
                    h.Container.Leave();
                }
            }
            catch (Exception e)
            {
                Calls.Reopen(objects);
                h.Reopen();
                return Errors.From(e);
            }

            Calls.Forget(objects);
            Calls.Containers.Remove(h);
            h.Connection.RemoveContainer();
            return 0;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
    }

    private static int FlushCore(int containerId, TimeSpan timeout)
    {
        var h = Calls.Containers.Enter(containerId);
        if (h is null)
        {
            return Calls.NotFound("container", containerId);
        }

        try
        {
            if (h.Connection.Client.IsBrokerLost)
            {
                return Calls.BrokerLost();
            }

            h.Container.Flush(timeout);
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
