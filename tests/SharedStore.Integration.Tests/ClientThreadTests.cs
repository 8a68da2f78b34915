namespace SharedStore.Integration.Tests;

/// <summary>One client process used by several threads at once, against a real broker process.</summary>
public sealed class ClientThreadTests : CrossProcessTest
{
    [Test]
    public void CreateObject_TwoThreadsInOneNewContainer_EveryObjectOpensAndHoldsItsBytes()
    {
        // Contract: threads of one client may create objects in one container at the same time. The broker sends a
        // segment's descriptors once per member, with the first reply that needs them; when that reply belongs to the
        // other thread (not mapped yet) the create still succeeds (the client asks for the segment again, segment_fetch)
        // instead of failing with Internal "lives in segment N, which this client never received".
        const int containers = 20, perThread = 40, size = 4096;
        using var broker = StartBroker();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        for (int c = 0; c < containers; c++)
        {
            using var con = client.CreateContainer($"c{c}", SharedStoreClient.ProcessGroupId);
            using var start = new Barrier(2);
            var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
            var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                try
                {
                    start.SignalAndWait(TimeSpan.FromSeconds(30));
                    for (int i = 0; i < perThread; i++)
                    {
                        using var obj = con.CreateObject($"t{t}-{i}", size);
                        byte[] stamp = [(byte)t, (byte)i];
                        obj.Write(0, stamp, TimeSpan.FromSeconds(10));
                        using var lease = obj.Get(0, 2, TimeSpan.FromSeconds(10));
                        if (!lease.Span.SequenceEqual(stamp))
                        {
                            throw new InvalidOperationException($"object t{t}-{i} holds other bytes than were written");
                        }
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                }
            })).ToList();
            threads.ForEach(th => th.Start());
            Assert.That(threads.All(th => th.Join(TimeSpan.FromSeconds(60))), Is.True, "the creating threads did not finish in 60 s");
            Assert.That(errors, Is.Empty, $"container c{c}: {string.Join("\n", errors)}");
        }
    }
}
