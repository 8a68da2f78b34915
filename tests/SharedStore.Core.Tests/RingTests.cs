using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using SharedStore.Queues;

namespace SharedStore.Core.Tests;

/// <summary>The submission ring: layout, order across wrap-around, full, batched publish, consumer sleep/wake.</summary>
[TestFixture]
public unsafe class RingTests
{
    private byte* _region;
    private Doorbell* _bell;

    [TearDown]
    public void TearDown()
    {
        NativeMemory.AlignedFree(_region);
        NativeMemory.AlignedFree(_bell);
        _region = null;
        _bell = null;
    }

    private (SpscRingProducer P, SpscRingConsumer C) Make(int slots, int slotSize = 64)
    {
        long len = RingDescriptor.LengthFor(slots, slotSize);
        _region = (byte*)NativeMemory.AlignedAlloc((nuint)len, 4096);
        _bell = (Doorbell*)NativeMemory.AlignedAlloc(64, 64);
        *_bell = default;
        SpscRingConsumer.Format(_region, slots, slotSize, Environment.ProcessId);
        return (new SpscRingProducer(_region, _bell), new SpscRingConsumer(_region));
    }

    private struct Collect : IRingHandler
    {
        public List<long> Seen;

        public readonly void OnMessage(ReadOnlySpan<byte> m) => Seen.Add(BinaryPrimitives.ReadInt64LittleEndian(m));
    }

    [Test]
    public void RingHeader_Layout_MatchesDescriptor()
    {
        var h = default(RingHeader);
        byte* b = (byte*)&h;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(sizeof(RingHeader), Is.EqualTo(RingDescriptor.SlotsOffset).And.EqualTo(256));
            Assert.That((byte*)&h.Tail - b, Is.EqualTo(64), "Tail alone on its cache line");
            Assert.That((byte*)&h.Head - b, Is.EqualTo(128), "Head alone on its cache line (with the producer-waits word)");
            Assert.That((byte*)&h.ProducerWaits - b, Is.EqualTo(136));
            Assert.That((byte*)&h.SlotCount - b, Is.EqualTo(12));
            Assert.That(RingDescriptor.Magic, Is.EqualTo(BitConverter.ToUInt64("SSRING01"u8)));
            Assert.That(sizeof(Doorbell), Is.EqualTo(64));
        }
    }

    [Test]
    public void Ring_UnpublishedSlots_AreInvisible_PublishedOnesArriveInOrder()
    {
        // Contract: claim/commit is private until Publish; a producer that dies before publishing hides nothing else.
        var (p, c) = Make(8);
        Span<byte> m = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(m, 1);
        Assert.That(p.TryWrite(m), Is.True);
        var h = new Collect { Seen = [] };
        Assert.That(c.Drain(ref h, 100), Is.Zero, "committed but unpublished");
        p.Publish();
        Assert.That(c.Drain(ref h, 100), Is.EqualTo(1));
        Assert.That(h.Seen, Is.EqualTo(new long[] { 1 }));
    }

    [Test]
    public void Ring_Full_TryWriteFailsAsAValue_ThenSucceedsAfterDrain()
    {
        var (p, c) = Make(4);
        Span<byte> m = stackalloc byte[8];
        for (int i = 0; i < 4; i++)
        {
            Assert.That(p.TryWrite(m), Is.True);
        }

        Assert.That(p.TryWrite(m), Is.False, "full is an expected outcome, not an exception");
        p.Publish();
        var h = new Collect { Seen = [] };
        Assert.That(c.Drain(ref h, 2), Is.EqualTo(2));
        Assert.That(p.TryWrite(m), Is.True);
    }

    [Test]
    public void Ring_MillionMessagesAcrossWrapAround_ArriveInOrderExactlyOnce()
    {
        // Contract: order and exactly-once across many wrap-arounds with concurrent producer and consumer.
        var (p, c) = Make(64);
        const long N = 1_000_000;
        var producer = Task.Run(() =>
        {
            Span<byte> m = stackalloc byte[8];
            for (long i = 0; i < N; i++)
            {
                BinaryPrimitives.WriteInt64LittleEndian(m, i);
                while (!p.TryWrite(m))
                {
                    p.Publish();
                    Assert.That(p.WaitForSpace(TimeSpan.FromSeconds(30), default), Is.True);
                }

                if ((i & 15) == 15)
                {
                    p.Publish(); // batches of 16
                }
            }

            p.Publish();
        });
        var h = new Collect { Seen = new List<long>((int)N) };
        var sw = Stopwatch.StartNew();
        while (h.Seen.Count < N)
        {
            if (c.Drain(ref h, 256) == 0)
            {
                Thread.Yield();
            }

            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)));
        }

        Assert.That(producer.Wait(TimeSpan.FromSeconds(30)), Is.True);
        for (int i = 0; i < N; i++)
        {
            if (h.Seen[i] != i)
            {
                Assert.Fail($"message {i} was {h.Seen[i]}");
            }
        }
    }

    [TestCase(false, TestName = "Doorbell_SleepingConsumer_IsWokenByPublish(membarrier)")]
    [TestCase(true, TestName = "Doorbell_SleepingConsumer_IsWokenByPublish(fencing producers)")]
    public void Doorbell_SleepingConsumer_IsWokenByPublish(bool fence)
    {
        // Contract: a consumer asleep on the doorbell wakes on a publish (not on its 30 s timeout), with expedited
        // membarrier or, without it, with producers fencing.
        var (p, c) = Make(8);
        if (fence || !Doorbell.RegisterProducerProcess())
        {
            _bell->Flags |= Doorbell.ProducersFence;
        }

        var consumer = Task.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            while (!c.HasMessages)
            {
                Doorbell.Sleep(_bell, c, static c => c.HasMessages, 30_000_000_000);
            }

            return sw.Elapsed;
        });
        var wait = Stopwatch.StartNew();
        while ((Volatile.Read(ref _bell->Seq) & Doorbell.AsleepBit) == 0)
        {
            Assert.That(wait.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "consumer to fall asleep");
            Thread.Sleep(1);
        }

        FutexSleepers.WaitFor(&_bell->Seq, 1, "the consumer to sleep in the kernel");
        Span<byte> m = stackalloc byte[8];
        p.TryWrite(m);
        p.Publish();
        Assert.That(consumer.Wait(TimeSpan.FromSeconds(10)), Is.True, "woken by the publish");
        Assert.That(Volatile.Read(ref _bell->Seq) & Doorbell.AsleepBit, Is.Zero);
    }
}
