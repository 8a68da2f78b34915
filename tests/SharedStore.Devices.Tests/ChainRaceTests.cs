using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>
/// Every binding of every request is notified, however the scheduler's worker and its producers interleave. Pins the
/// lost notification behind a bench hang (issue 12): the thread-pool scheduler enqueued the first binding of a
/// memory-device chain before it linked the rest, so a worker already running could take the chain, reach a binding
/// whose link was not written yet, read its stale end-of-chain and never run (nor notify) the rest of the request.
/// The broker's applier then waited for that group forever, and the client behind it.
/// </summary>
[TestFixture]
[SupportedOSPlatform("linux")]
public sealed unsafe class ChainRaceTests
{
    [Test]
    public void Schedule_ManyProducersOfChainedMemoryRequests_EveryBindingIsNotified()
    {
        // Contract: each Schedule of an n-binding request notifies n bindings exactly once. Several producers reuse
        // their requests as the broker's appliers do (schedule, wait for every notification, schedule again) on a
        // one-worker scheduler, the broker's configuration, with more runnable threads than CPUs so that a producer is
        // often preempted in the middle of Schedule.
        const int Producers = 4;
        const int Bindings = 8;
        var budget = TimeSpan.FromSeconds(8);
        using var scheduler = new ThreadPoolScheduler(threadCount: 1);
        var failures = new List<string>();
        long schedules = 0;
        var threads = new Thread[Producers];
        for (int t = 0; t < Producers; t++)
        {
            threads[t] = new Thread(() =>
            {
                nint region = (nint)NativeMemory.AlignedAlloc(Bindings * 64, 64);
                nint source = (nint)NativeMemory.AlignedAlloc(Bindings * 64, 64);
                try
                {
                    using var device = new MemoryRegionDevice(region, Bindings * 64, owner: null);
                    int pending = 0;
                    using var done = new ManualResetEventSlim();
                    var request = new RandomAccessRequest(device, RandomAccessOperation.Write, 0);
                    for (int i = 0; i < Bindings; i++)
                    {
                        request.Bindings.Add(new RandomAccessRequestBinding(source + (i * 64), 64, (_, _) =>
                        {
                            if (Interlocked.Decrement(ref pending) == 0)
                            {
                                done.Set();
                            }
                        }));
                    }

                    var sw = Stopwatch.StartNew();
                    while (sw.Elapsed < budget)
                    {
                        done.Reset();
                        Volatile.Write(ref pending, Bindings);
                        scheduler.Schedule(request);
                        if (!done.Wait(TimeSpan.FromSeconds(10)))
                        {
                            lock (failures)
                            {
                                failures.Add($"a request of {Bindings} bindings got {Bindings - Volatile.Read(ref pending)} notifications in 10 s");
                            }

                            return;
                        }

                        Interlocked.Increment(ref schedules);
                    }
                }
                finally
                {
                    NativeMemory.AlignedFree((void*)region);
                    NativeMemory.AlignedFree((void*)source);
                }
            })
            { IsBackground = true, Name = $"producer-{t}" };
            threads[t].Start();
        }

        foreach (var t in threads)
        {
            Assert.That(t.Join(TimeSpan.FromSeconds(60)), Is.True, "a producer did not finish");
        }

        TestContext.Progress.WriteLine($"  {Interlocked.Read(ref schedules)} requests of {Bindings} bindings scheduled");
        Assert.That(failures, Is.Empty);
    }
}
