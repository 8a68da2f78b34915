using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using SharedStore.Regions;

namespace SharedStore.Bench;

/// <summary>
/// Layout of the baseline ring that <see cref="SpscBaseline"/> maps into two processes (one memfd, MAP_SHARED).
/// Written for the bench from scratch and on purpose independent of <c>SharedStore.Queues</c>: it is the yardstick
/// that the product's ring is compared against, so it must not share that ring's code or its mistakes.
/// <code>
///  offset  0      8        12         16                     128          136                256          264      4096
///         +------+--------+----------+---------------------+------------+------------------+------------+--------+----------------------+
///         | magic| version| slotCount| (unused)            | Tail (P)   | (pad to 256)     | Head (C)   | (pad)  | slot 0 | slot 1 | ...  |
///         +------+--------+----------+---------------------+------------+------------------+------------+--------+----------------------+
///  slot (64 B, one cache line): word 0 = sequence number, words 1..6 = fixed pattern, word 7 = sequence × GuardMultiplier
/// </code>
/// Tail is written only by the producer, Head only by the consumer; each sits alone in a 128-byte-aligned pair of
/// cache lines, because the adjacent-line prefetcher pulls lines in pairs and would otherwise drag the other
/// party's counter along. Publication rule: slot <c>p mod SlotCount</c> holds a complete message once Tail &gt; p,
/// and may be overwritten once Head &gt; p.
/// </summary>
internal static class SpscBaselineLayout
{
    /// <summary>"SPSC64B1" read as a little-endian long.</summary>
    public const long Magic = 0x3142_3436_4353_5053;
    public const int LayoutVersion = 1;

    public const int MagicOffset = 0;
    public const int VersionOffset = 8;
    public const int SlotCountOffset = 12;

    /// <summary>Next position the producer will publish. Single writer: the producer.</summary>
    public const int TailOffset = 1 << 7; // 128

    /// <summary>Next position the consumer will read. Single writer: the consumer.</summary>
    public const int HeadOffset = 1 << 8; // 256

    /// <summary>Slots start on their own page.</summary>
    public const int SlotsOffset = 1 << 12; // 4096

    public const int SlotCount = 1 << 14; // 16384
    public const int SlotShift = 6;
    public const int SlotSize = 1 << SlotShift; // 64: the message is the whole slot
    public const long SlotMask = SlotCount - 1;
    public const long RegionSize = SlotsOffset + ((long)SlotCount * SlotSize); // 1 MiB + 4 KiB

    /// <summary>Odd, so word 7 differs for every sequence number and a slot read half from one lap and half from the
    /// next shows as a mismatch between words 0 and 7.</summary>
    public const ulong GuardMultiplier = 0x9E37_79B9_7F4A_7C15;
}

/// <summary>
/// <c>spsc-64b</c>: millions of 64-byte messages per second through a single-producer single-consumer ring in shared
/// memory, from this process (producer) to a child process (busy-polling consumer). Baseline in the same run: the
/// same ring, same code, between two threads of this process (<c>spsc-64b-2threads</c>).
/// <para><b>Algorithm</b> (Lamport's ring with cached indices, as in Agrona/Garnet SPSC rings). Positions are 64-bit
/// and only grow; slot = position mod 16384.</para>
/// <para><b>Producer</b>, per message: (1) if Tail − cachedHead = SlotCount, re-read Head (acquire) until there is
/// room — only then, so a non-full ring costs the producer no read of the consumer's line; (2) build the message
/// (sequence in word 0, guard in word 7) and copy its 64 bytes into the slot; (3) store Tail + 1 (release): the slot
/// writes of (2) happen-before any consumer read that sees the new Tail.</para>
/// <para><b>Consumer</b>, per message: (1) if Head = cachedTail, busy-poll Tail (acquire) until it moves; (2) copy the
/// 64 bytes out of the slot; (3) store Head + 1 (release): the copy of (2) happens-before the producer's overwrite,
/// which it only starts after seeing the new Head; (4) check the copy (word 0 = Head, word 7 = guard) and add its
/// eight words to a checksum, so every byte of every message is read.</para>
/// <para>Both waits are pure busy polls; after 2^14 empty polls (tens of µs: the peer was descheduled, which happens on
/// a shared 2-vCPU machine) they yield the CPU, and after 30 s without progress they throw, so a dead peer fails the
/// scenario instead of hanging it. The consumer reports count, checksum and the number of out-of-order or torn
/// messages; the parent checks them against what it produced and throws on any difference.</para>
/// </summary>
internal sealed unsafe class SpscBaseline : IScenario
{
    private const int Rounds = 5;
    private const long DefaultMessageCount = 50_000_000;
    private const int StallTimeoutMs = 30_000;
    private const int YieldMask = (1 << 14) - 1;

    public string Name => "spsc-64b";

    public string Description => "M msg/s of 64 B messages through a from-scratch SPSC ring, producer process to busy-polling consumer process vs the same ring between two threads of one process";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        long messages = DefaultMessages(context);
        double crossProcess = MeasureMsgPerSec(context, messages);
        double twoThreads = MeasureInProcessMsgPerSec(context, messages);
        return [new BenchResult(Name, "median", "Mmsg/s", crossProcess, "spsc-64b-2threads", twoThreads)];
    }

    /// <summary>Messages per round for this run: 50 M, scaled by <c>--scale</c>, at least 1 M.</summary>
    internal static long DefaultMessages(BenchContext context) => Math.Max(1_000_000, (long)(DefaultMessageCount * context.Scale));

    /// <summary>The <c>spsc-64b</c> figure: median over 5 rounds (after a short warm-up round) of millions of messages
    /// per second from this process to a consumer child process, each round <paramref name="messages"/> messages.
    /// Throws when the consumer missed, reordered or tore any message.</summary>
    internal static double MeasureMsgPerSec(BenchContext context, long messages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(messages, 1);
        using var fd = Memfd.Create("bench-spsc-64b", SpscBaselineLayout.RegionSize);
        using var region = MapAndInitialize(fd);
        byte* ring = region.Pointer;

        // The memfd is close-on-exec; the child reopens it through our /proc entry (same user, so it may).
        using var child = new ChildProcess("spsc-consumer", $"/proc/{Environment.ProcessId}/fd/{fd.Fd}");
        Expect(child.Read(TimeSpan.FromSeconds(30)), "mapped");
        var rates = new List<double>();
        long position = 0;
        for (int round = -1; round < Rounds; round++)
        {
            long count = round < 0 ? WarmupMessages(messages) : messages;
            child.Send(string.Create(CultureInfo.InvariantCulture, $"consume {position} {count}"));
            Expect(child.Read(TimeSpan.FromSeconds(30)), "polling");
            long t0 = Stopwatch.GetTimestamp();
            Produce(ring, position, count);
            WaitForHead(ring, position + count);
            long t1 = Stopwatch.GetTimestamp();
            Verify("consumer process", ParseReply(child.Read(TimeSpan.FromSeconds(60))), position, count);
            position += count;
            if (round >= 0)
            {
                double rate = count * 1e3 / Stats.Ns(t1 - t0);
                rates.Add(rate);
                context.Log.WriteLine($"  spsc-64b cross-process round {round}: {rate:F1} Mmsg/s");
            }
        }

        child.Send("exit");
        return Stats.Median(rates);
    }

    /// <summary>The same measurement with the consumer on a second thread of this process (one mapping, no child):
    /// what the ring costs without a process boundary.</summary>
    internal static double MeasureInProcessMsgPerSec(BenchContext context, long messages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(messages, 1);
        using var fd = Memfd.Create("bench-spsc-64b-threads", SpscBaselineLayout.RegionSize);
        using var region = MapAndInitialize(fd);
        nint ring = (nint)region.Pointer;
        var rates = new List<double>();
        long position = 0;
        for (int round = -1; round < Rounds; round++)
        {
            long first = position;
            long count = round < 0 ? WarmupMessages(messages) : messages;
            ConsumeResult result = default;
            Exception? failure = null;
            int started = 0;
            var consumer = new Thread(() =>
            {
                Volatile.Write(ref started, 1);
                try
                {
                    result = Consume((byte*)ring, first, count);
                }
                catch (Exception e)
                {
                    failure = e; // rethrown by the producer thread below; a throw here would end the process
                }
            })
            { IsBackground = true, Name = "spsc-64b consumer" };
            consumer.Start();
            while (Volatile.Read(ref started) == 0)
            {
                Thread.Yield();
            }

            long t0 = Stopwatch.GetTimestamp();
            Produce((byte*)ring, first, count);
            WaitForHead((byte*)ring, first + count);
            long t1 = Stopwatch.GetTimestamp();
            consumer.Join();
            if (failure is not null)
            {
                throw new InvalidOperationException("spsc-64b: the consumer thread failed", failure);
            }

            Verify("consumer thread", result, first, count);
            position += count;
            if (round >= 0)
            {
                double rate = count * 1e3 / Stats.Ns(t1 - t0);
                rates.Add(rate);
                context.Log.WriteLine($"  spsc-64b two-thread round {round}: {rate:F1} Mmsg/s");
            }
        }

        return Stats.Median(rates);
    }

    /// <summary>Child role <c>spsc-consumer PATH</c>: maps the ring at PATH, answers "mapped", then per
    /// <c>consume FIRST COUNT</c> line answers "polling", consumes and answers
    /// <c>done COUNT CHECKSUM ERRORS FIRSTBAD</c>; <c>exit</c> or end of input ends it.</summary>
    internal static int RunConsumerChild(string[] args)
    {
        int raw = Interop.Libc.open(args[0], Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, 0);
        if (raw < 0)
        {
            throw Interop.Libc.Error($"open({args[0]})", Interop.Libc.LastErrno);
        }

        using var fd = new SafeFd(raw);
        using var region = MappedRegion.Map(fd, SpscBaselineLayout.RegionSize, writable: true);
        region.Populate(0, SpscBaselineLayout.RegionSize);
        byte* ring = region.Pointer;
        if (*(long*)(ring + SpscBaselineLayout.MagicOffset) != SpscBaselineLayout.Magic
            || *(int*)(ring + SpscBaselineLayout.VersionOffset) != SpscBaselineLayout.LayoutVersion
            || *(int*)(ring + SpscBaselineLayout.SlotCountOffset) != SpscBaselineLayout.SlotCount)
        {
            throw new InvalidDataException($"{args[0]} is not a version-{SpscBaselineLayout.LayoutVersion} spsc-64b ring of {SpscBaselineLayout.SlotCount} slots");
        }

        Console.WriteLine("mapped");
        while (Console.ReadLine() is string line && line != "exit")
        {
            string[] parts = line.Split(' ');
            long first = long.Parse(parts[1], CultureInfo.InvariantCulture);
            long count = long.Parse(parts[2], CultureInfo.InvariantCulture);
            Console.WriteLine("polling");
            var r = Consume(ring, first, count);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"done {r.Count} {r.Checksum} {r.Errors} {r.FirstBad}"));
        }

        return 0;
    }

    /// <summary>Producer steps 1–3 of the class comment for positions [first, first + count).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Produce(byte* ring, long first, long count)
    {
        long* tailField = (long*)(ring + SpscBaselineLayout.TailOffset);
        long* headField = (long*)(ring + SpscBaselineLayout.HeadOffset);
        byte* slots = ring + SpscBaselineLayout.SlotsOffset;
        ulong* message = stackalloc ulong[8];
        for (int i = 1; i < 7; i++)
        {
            message[i] = Pattern(i);
        }

        // Acquire: a Head seen here means the consumer has finished copying every slot below it.
        long headCache = Volatile.Read(ref *headField);
        long end = first + count;
        for (long tail = first; tail < end; tail++)
        {
            if (tail - headCache >= SpscBaselineLayout.SlotCount)
            {
                headCache = WaitForRoom(headField, tail);
            }

            message[0] = (ulong)tail;
            message[7] = (ulong)tail * SpscBaselineLayout.GuardMultiplier;
            Unsafe.CopyBlockUnaligned(slots + ((tail & SpscBaselineLayout.SlotMask) << SpscBaselineLayout.SlotShift), message, SpscBaselineLayout.SlotSize);

            // Release: the 64 bytes above must be visible before the consumer can see Tail pass this slot, or it
            // would copy out a half-written message.
            Volatile.Write(ref *tailField, tail + 1);
        }
    }

    /// <summary>Consumer steps 1–4 of the class comment for positions [first, first + count).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static ConsumeResult Consume(byte* ring, long first, long count)
    {
        long* tailField = (long*)(ring + SpscBaselineLayout.TailOffset);
        long* headField = (long*)(ring + SpscBaselineLayout.HeadOffset);
        byte* slots = ring + SpscBaselineLayout.SlotsOffset;
        ulong* message = stackalloc ulong[8];
        ulong checksum = 0;
        long errors = 0;
        long firstBad = -1;

        // Acquire: slot reads below must not be satisfied before the Tail that published them was seen.
        long tailCache = Volatile.Read(ref *tailField);
        long end = first + count;
        for (long head = first; head < end; head++)
        {
            if (head >= tailCache)
            {
                tailCache = WaitForTail(tailField, head);
            }

            Unsafe.CopyBlockUnaligned(message, slots + ((head & SpscBaselineLayout.SlotMask) << SpscBaselineLayout.SlotShift), SpscBaselineLayout.SlotSize);

            // Release: the copy above must complete before the producer can see the slot as free and overwrite it.
            Volatile.Write(ref *headField, head + 1);

            if (message[0] != (ulong)head || message[7] != (ulong)head * SpscBaselineLayout.GuardMultiplier)
            {
                errors++;
                firstBad = firstBad < 0 ? head : firstBad;
            }

            checksum += message[0] + message[1] + message[2] + message[3] + message[4] + message[5] + message[6] + message[7];
        }

        return new ConsumeResult(count, checksum, errors, firstBad);
    }

    /// <summary>What the consumer saw of [first, first + count): messages taken, the wrapping sum of their words, how
    /// many had the wrong sequence or a torn guard, and the position of the first such one (−1 if none).</summary>
    internal readonly record struct ConsumeResult(long Count, ulong Checksum, long Errors, long FirstBad);

    /// <summary>The checksum of a correct delivery of [first, first + count):
    /// Σ (pattern + seq + seq × GuardMultiplier) = count × pattern + (1 + GuardMultiplier) × Σ seq, all mod 2^64.</summary>
    internal static ulong ExpectedChecksum(long first, long count)
    {
        ulong n = (ulong)count;
        ulong pattern = 0;
        for (int i = 1; i < 7; i++)
        {
            pattern += Pattern(i);
        }

        ulong triangle = n % 2 == 0 ? n / 2 * (n - 1) : n * ((n - 1) / 2); // Σ 0..n−1 without overflowing n × (n − 1)
        ulong sumOfSequences = (n * (ulong)first) + triangle;
        return (n * pattern) + ((1 + SpscBaselineLayout.GuardMultiplier) * sumOfSequences);
    }

    private static ulong Pattern(int word) => 0xA5A5_5A5A_0F0F_F0F0UL ^ ((ulong)word * 0x0101_0101_0101_0101UL);

    private static long WarmupMessages(long messages) => Math.Max(100_000, messages / 10);

    private static MappedRegion MapAndInitialize(SafeFd fd)
    {
        if (!Memfd.Reserve(fd, 0, SpscBaselineLayout.RegionSize, out int errno))
        {
            throw Interop.Libc.Error("fallocate of the spsc-64b ring", errno);
        }

        var region = MappedRegion.Map(fd, SpscBaselineLayout.RegionSize, writable: true);
        region.Populate(0, SpscBaselineLayout.RegionSize); // no page faults inside the timed rounds
        byte* ring = region.Pointer;
        *(long*)(ring + SpscBaselineLayout.MagicOffset) = SpscBaselineLayout.Magic;
        *(int*)(ring + SpscBaselineLayout.VersionOffset) = SpscBaselineLayout.LayoutVersion;
        *(int*)(ring + SpscBaselineLayout.SlotCountOffset) = SpscBaselineLayout.SlotCount;
        return region;
    }

    /// <summary>The producer's full-ring path: busy-polls Head until a slot is free; returns the Head it saw.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long WaitForRoom(long* headField, long tail)
    {
        long spins = 0;
        long since = 0;
        while (true)
        {
            // Acquire: pairs with the consumer's release of Head, so the slot we are about to reuse was copied out.
            long head = Volatile.Read(ref *headField);
            if (tail - head < SpscBaselineLayout.SlotCount)
            {
                return head;
            }

            if ((++spins & YieldMask) == 0)
            {
                since = YieldOrThrow(since, "the consumer stopped taking messages (ring full)");
            }
        }
    }

    /// <summary>The consumer's empty-ring path: busy-polls Tail until it passes <paramref name="head"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long WaitForTail(long* tailField, long head)
    {
        long spins = 0;
        long since = 0;
        while (true)
        {
            // Acquire: pairs with the producer's release of Tail, so the slot's 64 bytes are complete when we copy.
            long tail = Volatile.Read(ref *tailField);
            if (tail > head)
            {
                return tail;
            }

            if ((++spins & YieldMask) == 0)
            {
                since = YieldOrThrow(since, "the producer stopped publishing (ring empty)");
            }
        }
    }

    /// <summary>The parent's end of a round: busy-polls Head until the consumer has taken everything.</summary>
    private static void WaitForHead(byte* ring, long end)
    {
        long* headField = (long*)(ring + SpscBaselineLayout.HeadOffset);
        long spins = 0;
        long since = 0;

        // Acquire: the round ends when the consumer's last release of Head is seen.
        while (Volatile.Read(ref *headField) < end)
        {
            if ((++spins & YieldMask) == 0)
            {
                since = YieldOrThrow(since, "the consumer did not take the last messages");
            }
        }
    }

    private static long YieldOrThrow(long since, string what)
    {
        long now = Stopwatch.GetTimestamp();
        if (since == 0)
        {
            since = now;
        }
        else if (Stopwatch.GetElapsedTime(since, now).TotalMilliseconds > StallTimeoutMs)
        {
            throw new TimeoutException($"spsc-64b: {what} for {StallTimeoutMs / 1000} s");
        }

        Thread.Yield();
        return since;
    }

    private static ConsumeResult ParseReply(string line)
    {
        string[] p = line.Split(' ');
        if (p.Length != 5 || p[0] != "done")
        {
            throw new InvalidOperationException($"spsc-64b: unexpected consumer reply '{line}'");
        }

        return new ConsumeResult(
            long.Parse(p[1], CultureInfo.InvariantCulture),
            ulong.Parse(p[2], CultureInfo.InvariantCulture),
            long.Parse(p[3], CultureInfo.InvariantCulture),
            long.Parse(p[4], CultureInfo.InvariantCulture));
    }

    private static void Verify(string who, ConsumeResult r, long first, long count)
    {
        ulong expected = ExpectedChecksum(first, count);
        if (r.Count != count || r.Errors != 0 || r.Checksum != expected)
        {
            throw new InvalidOperationException(
                $"spsc-64b: the {who} got a wrong stream for positions [{first}, {first + count}): count {r.Count} (expected {count}), " +
                $"{r.Errors} out-of-order or torn messages (first at {r.FirstBad}), checksum {r.Checksum:X16} (expected {expected:X16})");
        }
    }

    private static void Expect(string line, string expected)
    {
        if (line != expected)
        {
            throw new InvalidOperationException($"spsc-64b: the consumer process said '{line}', expected '{expected}'");
        }
    }
}
