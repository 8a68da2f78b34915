namespace SharedStore.Devices;

/// <summary>
/// Many transfers on one device through a scheduler, with a fixed number in flight (a sliding window): each completion
/// starts the next transfer. Used by the broker's restore to read slot headers and blocks of a durable object file.
/// </summary>
internal static unsafe class SlidingWindowTransfer
{
    /// <summary>Runs <paramref name="count"/> transfers (items with a negative offset are skipped) through the scheduler,
    /// 32 in flight, calling <paramref name="completed"/> with each item's index once it has transferred (on the
    /// completion thread; it must not throw); throws on any failure, once the transfers in flight have completed.</summary>
    public static void Run(IDeviceAccessScheduler scheduler, long count, Func<long, (long Offset, nint Memory, int Length)> item, RandomAccessFileDevice device, RandomAccessOperation op, Action<long>? completed = null, DeviceBuffers? bounce = null)
    {
        // A sliding window: each completion starts the next transfer (on the scheduler's completion thread), so the
        // queue stays 32 deep. Batches of 32 that each waited for their slowest transfer let it drain 32 times per GiB.
        // With bounce buffers (reads only) each transfer reads into a free buffer, and its completion copies the
        // buffer to the item's memory and frees the buffer before it starts the next transfer.
        int Depth = bounce?.Count ?? 32;
        long next = 0;
        int pending = 1; // this thread's own count, dropped once the first transfers are started
        string? failed = null;
        using var done = new ManualResetEventSlim();

        bool StartNext()
        {
            while (Volatile.Read(ref failed) is null)
            {
                long i = Interlocked.Increment(ref next) - 1;
                if (i >= count)
                {
                    return false;
                }

                var (off, mem, len) = item(i);
                if (off < 0 || len <= 0)
                {
                    continue;
                }

                Interlocked.Increment(ref pending);
                var r = new RandomAccessRequest(device, op, off);
                if (bounce is not null)
                {
                    if (!bounce.TryRent(out int k))
                    {
                        throw new InvalidOperationException("More transfers in flight than bounce buffers."); // Depth is bounce.Count
                    }

                    r.Add(new RandomAccessRequestBinding(bounce[k], len, Completed) { State = new Bounced(i, k, mem) });
                }
                else
                {
                    r.Add(new RandomAccessRequestBinding(mem, len, Completed) { State = i });
                }

                scheduler.Schedule(r);
                return true;
            }

            return false;
        }

        void Completed(RandomAccessRequestBinding b, TransferResult res)
        {
            if (!res.Succeeded || (op == RandomAccessOperation.Read && res.BytesTransferred != b.Length))
            {
                Interlocked.CompareExchange(ref failed, $"{op} of {b.Length} bytes at {b.DeviceOffset} of {device.Path}: {res.Status} {res.BytesTransferred}", null);
                if (b.State is Bounced failedVia)
                {
                    bounce!.Return(failedVia.Buffer);
                }
            }
            else if (b.State is Bounced via)
            {
                Buffer.MemoryCopy((void*)b.Address, (void*)via.Memory, b.Length, b.Length);
                bounce!.Return(via.Buffer);
                StartNext();
                completed?.Invoke(via.Item);
            }
            else
            {
                StartNext();
                completed?.Invoke((long)b.State!);
            }

            if (Interlocked.Decrement(ref pending) == 0)
            {
                done.Set();
            }
        }

        for (int k = 0; k < Depth && StartNext(); k++)
        {
        }

        if (Interlocked.Decrement(ref pending) != 0)
        {
            done.Wait();
        }

        if (failed is not null)
        {
            throw new IOException(failed);
        }
    }

    private sealed record Bounced(long Item, int Buffer, nint Memory);
}
