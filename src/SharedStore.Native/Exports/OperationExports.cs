using System.Runtime.InteropServices;
using SharedStore.Native.Handles;

namespace SharedStore.Native.Exports;

/// <summary>object_awrite, object_aread and the calls on their operation ids: object_opstatus, object_opcancel,
/// object_opwait, object_return. An operation id lives until object_return reads the result of the finished
/// operation (as POSIX's <c>aio_return</c> ends an aiocb), or until its object is left.</summary>
internal static unsafe class OperationExports
{
    /// <summary>object_opstatus's and object_opwait's "still running" (the seed's INPROGRESS).</summary>
    private const int InProgress = 1;

    /// <summary>The seed's CANCELED.</summary>
    private const int Canceled = 2;

    /// <summary>object_opcancel: the operation is being applied or already done, and completes whole.</summary>
    private const int NotCanceled = 1;

    [UnmanagedCallersOnly(EntryPoint = "object_awrite")]
    public static int AWrite(int objectId, nuint offset, byte* buf, nuint size)
    {
        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        try
        {
            int rc = Calls.CheckTransfer("object_awrite", h, offset, buf, size, out long off);
            if (rc != 0)
            {
                return rc;
            }

            var slot = OperationTable.Rent();
            if (slot is null)
            {
                return Errors.Fail(ErrorCode.NoResources, $"this process has {OperationTable.Capacity} asynchronous operations outstanding; end finished ones with object_return");
            }

            AsyncOperation op;
            try
            {
                op = h.Object.AWrite(off, new ReadOnlySpan<byte>(buf, (int)size)); // returns once buf is copied
            }
            catch
            {
                OperationTable.Return(slot);
                throw;
            }

            slot.Kind = OperationKind.Async;
            slot.Operation = op;
            slot.Owner = h;
            return OperationTable.Publish(slot);
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

    /// <summary>object_aread: the copy runs on this process's device scheduler into the caller's buffer; the read keeps
    /// a use of its object until it finished, so the object (and its mapping) cannot be left under it.</summary>
    [UnmanagedCallersOnly(EntryPoint = "object_aread")]
    public static int ARead(int objectId, nuint offset, byte* buf, nuint size)
    {
        var h = Calls.Objects.Enter(objectId);
        if (h is null)
        {
            return Calls.NotFound("object", objectId);
        }

        bool useHandedOver = false;
        try
        {
            int rc = Calls.CheckTransfer("object_aread", h, offset, buf, size, out long off);
            if (rc != 0)
            {
                return rc;
            }

            var slot = OperationTable.Rent();
            if (slot is null)
            {
                return Errors.Fail(ErrorCode.NoResources, $"this process has {OperationTable.Capacity} asynchronous operations outstanding; end finished ones with object_return");
            }

            AsyncOperation op;
            try
            {
                op = h.Object.ARead(off, new UnmanagedMemory(buf, (int)size).Memory);
            }
            catch
            {
                OperationTable.Return(slot);
                throw;
            }

            var use = new ReadUse(h);
            slot.Kind = OperationKind.Async;
            slot.Operation = op;
            slot.Owner = h;
            slot.Use = use;
            int id = OperationTable.Publish(slot);
            ReleaseWhenDone(op, use);
            useHandedOver = true;
            return id;
        }
        catch (Exception e)
        {
            return Errors.From(e);
        }
        finally
        {
            if (!useHandedOver)
            {
                h.Exit();
            }
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "object_opstatus")]
    public static int OpStatus(int operationId)
    {
        try
        {
            if (!OperationTable.TryRead(operationId, out var kind, out var op, out _, out var use))
            {
                return UnknownOperation(operationId);
            }

            return kind == OperationKind.Lease ? 0 : StatusValue(op, use);
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "object_opwait")]
    public static int OpWait(int operationId, int timeoutMs)
    {
        try
        {
            if (!OperationTable.TryRead(operationId, out var kind, out var op, out _, out var use))
            {
                return UnknownOperation(operationId);
            }

            if (kind == OperationKind.Lease)
            {
                return 0;
            }

            return op.Wait(Calls.Timeout(timeoutMs))
                ? StatusValue(op, use)
                : Errors.Fail(ErrorCode.Timeout, $"operation {operationId} did not finish within {timeoutMs} ms");
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "object_opcancel")]
    public static int OpCancel(int operationId)
    {
        try
        {
            if (!OperationTable.TryRead(operationId, out var kind, out var op, out _, out var use))
            {
                return UnknownOperation(operationId);
            }

            if (kind == OperationKind.Lease)
            {
                return Calls.Invalid($"object_opcancel: {operationId} is a lease; end it with object_put");
            }

            return op.Cancel() ? 0 : NotCanceled;
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
    }

    /// <summary>object_return: the bytes transferred by a completed operation, or its negative error (Canceled for a
    /// canceled one). Ends the id. Busy (and the id stays) while the operation runs.</summary>
    [UnmanagedCallersOnly(EntryPoint = "object_return")]
    public static int Return(int operationId)
    {
        try
        {
            if (!OperationTable.TryRead(operationId, out var kind, out var op, out _, out var use))
            {
                return UnknownOperation(operationId);
            }

            if (kind == OperationKind.Lease)
            {
                return Calls.Invalid($"object_return: {operationId} is a lease; end it with object_put");
            }

            long result;
            try
            {
                if (op.Status == AsyncStatus.InProgress)
                {
                    return Errors.Fail(ErrorCode.Busy, $"operation {operationId} is still in progress");
                }

                result = op.Result;
                use?.Release();
            }
            catch (InvalidOperationException e)
            {
                result = Errors.From(e, ErrorCode.NotFound); // its status entry was reused: end the id all the same
            }

            if (!OperationTable.TryClaim(operationId, out var slot))
            {
                return UnknownOperation(operationId); // another thread returned it first
            }

            OperationTable.Return(slot);
            return result >= 0 ? (int)Math.Min(result, int.MaxValue) : (int)result;
        }
        catch (Exception e)
        {
            return Errors.From(e, ErrorCode.NotFound);
        }
    }

    private static int StatusValue(AsyncOperation op, ReadUse? use)
    {
        var status = op.Status;
        if (status != AsyncStatus.InProgress)
        {
            use?.Release(); // seen finished: the object may be left right after this call returns
        }

        return status switch
        {
            AsyncStatus.Completed => 0,
            AsyncStatus.InProgress => InProgress,
            AsyncStatus.Canceled => Canceled,
            _ => -(int)op.Error,
        };
    }

    private static int UnknownOperation(int operationId) =>
        Errors.Fail(ErrorCode.NotFound, $"{operationId} is not an operation of this process (never started, returned, or its object was left)");

    private static void ReleaseWhenDone(AsyncOperation op, ReadUse use)
    {
        var task = op.AsValueTask();
        if (task.IsCompleted)
        {
            if (!task.IsCompletedSuccessfully)
            {
                _ = task.AsTask().Exception; // observed: the C caller reads the error through opstatus
            }

            use.Release();
            return;
        }

        task.AsTask().ContinueWith(
            static (t, state) =>
            {
                _ = t.Exception; // observed, as above
                ((ReadUse)state!).Release();
            },
            use,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }
}
