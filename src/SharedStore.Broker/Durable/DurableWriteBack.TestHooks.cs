using SharedStore.Devices;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>Fault injection for the durable crash tests (tests/SharedStore.CrashSafety.Tests/DurableCrashTests.cs).</summary>
internal sealed partial class DurableWriteBack
{
    /// <summary>
    /// SHAREDSTORE_TEST_TEAR_WINDOW_MS, read only by the test startup hook (<see cref="BrokerTestHooks"/>). A kill -9 of the broker did not tear a single slot
    /// write in our runs: none after hundreds of kills inside write-back passes (64 KiB and 1 MiB blocks, passes of up
    /// to 64 MiB), by restore's count and by scanning the files; presumably io_uring completes the writes a dying
    /// process has in flight. So no kill test could see the shadow-slot rule broken (a slot written in place passed).
    /// With N &gt; 0, write-back writes a batch's slot headers and slot data as two steps N ms apart (which goes
    /// first is random), so a kill between them leaves the batch's slots torn, as a power cut during the write may.
    /// Restore must then fall back to each block's other slot, which the invariant keeps durable.
    /// </summary>

    private void ScheduleWithTearWindow(DurableObject d, List<(long Offset, RandomAccessRequestBinding Header, RandomAccessRequestBinding Data)> writes)
    {
        bool headersFirst = Random.Shared.Next(2) == 0;
        for (int step = 0; step < 2; step++)
        {
            if (step == 1)
            {
                Thread.Sleep(BrokerTestHooks.TearWindowMs);
            }

            foreach (var (offset, header, data) in writes)
            {
                bool headerStep = (step == 0) == headersFirst;
                var request = new RandomAccessRequest(d.Device, RandomAccessOperation.Write, headerStep ? offset : offset + DurableFileDescriptor.SlotHeaderSize);
                request.Add(headerStep ? header : data);
                _scheduler.Schedule(request);
            }
        }
    }
}
