using System.Diagnostics;
using System.Globalization;

namespace SharedStore.Integration.Tests;

/// <summary>
/// What a hostile user can take from a root broker (`--system`), as the real user nobody (issue 13, findings 5 and 6):
/// shared memory is counted for everything the broker hands out, asynchronous channels included, against the memory
/// limit and a per-uid quota; connections are bounded per uid, must say hello in time, and a flood of them leaves a
/// legitimate client working and the broker's threads and descriptors where they were.
/// </summary>
public sealed class ResourceLimitTests : CrossProcessTest
{
    private const long GiB = 1L << 30;

    [SetUp]
    public void NeedNobody()
    {
        if (!ClientProcess.CanRunAsNobody(out string why))
        {
            Assert.Ignore($"these tests need a second user: {why}");
        }
    }

    [Test]
    public void AsyncChannel_ConnectionsThatAreMembersOfNothing_GetNoneAndTheBrokerMakesNoMemory()
    {
        // Contract: the three-hog run of the review — three connections of nobody, members of nothing, each asking for
        // 1 GiB of staging on a broker limited to 2 GiB — is refused with NoResources, and no channel memory is made
        // (it grew by 2.2 GiB uncounted before).
        var broker = StartBroker("--system", "--memory-limit", (2 * GiB).ToString(CultureInfo.InvariantCulture));
        for (int i = 0; i < 3; i++)
        {
            var hog = StartClient($"hog{i}", asNobody: true);
            hog.Ok($"connect {broker.SocketPath} staging={GiB}");
            hog.Err("open-async", "NoResources");
        }

        Assert.That(ChannelMemfds(broker.Pid), Is.Zero, "no channel memfd may exist");
        Assert.That(BytesInUse(broker), Is.Zero);
    }

    [Test]
    public void AsyncChannel_MembersPastTheMemoryLimit_RefusedAndCounted()
    {
        // Contract: a member's channel counts against --memory-limit like an object: with 2 GiB, the first 1 GiB channel
        // is granted and counted, the next ones are refused with NoResources.
        var broker = StartBroker("--system", "--memory-limit", (2 * GiB).ToString(CultureInfo.InvariantCulture));
        var granted = StartClient("hog0", asNobody: true);
        granted.Ok($"connect {broker.SocketPath} staging={GiB}");
        granted.Ok($"create-container hog0 {ClientProcess.NobodyId}");
        granted.Ok("open-async");
        long inUse = BytesInUse(broker);
        Assert.That(inUse, Is.GreaterThanOrEqualTo(GiB), "the channel is counted");
        for (int i = 1; i < 3; i++)
        {
            var hog = StartClient($"hog{i}", asNobody: true);
            hog.Ok($"connect {broker.SocketPath} staging={GiB}");
            hog.Ok($"create-container hog{i} {ClientProcess.NobodyId}");
            hog.Err("open-async", "NoResources");
        }

        Assert.That(BytesInUse(broker), Is.EqualTo(inUse), "refused channels are not counted");
        Assert.That(ChannelMemfds(broker.Pid), Is.EqualTo(1));
    }

    [Test]
    public void MemoryQuota_PerUid_RefusesTheHogButNotOthers()
    {
        // Contract: --uid-memory-quota bounds one user's objects and channels together, below the broker's limit: nobody
        // is refused past its quota while root still gets memory.
        var broker = StartBroker("--system", "--memory-limit", (8 * GiB).ToString(CultureInfo.InvariantCulture),
            "--uid-memory-quota", (3 * GiB / 2).ToString(CultureInfo.InvariantCulture));
        var hog = StartClient("hog", asNobody: true);
        hog.Ok($"connect {broker.SocketPath} staging={GiB}");
        hog.Ok($"create-container hog {ClientProcess.NobodyId}");
        hog.Ok("open-async");
        hog.Err($"create-object big {GiB}", "NoResources");
        hog.Ok($"create-object small {64L << 20}");

        var root = StartClient("root");
        root.Ok($"connect {broker.SocketPath}");
        root.Ok("create-container mine 0");
        root.Ok($"create-object big {GiB}");
        root.Ok("open-async");
    }

    [Test]
    [Budget(600)]
    public void ConnectionFlood_TenThousandAsNobody_OthersStillWorkAndTheBrokerRecovers()
    {
        // Contract: 10 000 connections of nobody that never say hello cost the broker at most MaxConnectionsPerUid
        // sessions (the rest are closed at accept), each for at most the hello timeout; meanwhile root connects and
        // works; afterwards the broker's threads and descriptors come back to where they were.
        var broker = StartBroker("--system", "--hello-timeout-ms", "3000");
        var probe = Connect(broker, "probe");
        probe.Ok("create-container before 0");
        var (threads0, fds0) = Counts(broker.Pid);

        var flooder = StartClient("flooder", asNobody: true);
        var sw = Stopwatch.StartNew();
        string[] flood = flooder.Ok($"flood {broker.SocketPath} 10000", TimeSpan.FromMinutes(5));
        TestContext.Progress.WriteLine($"  flood: {string.Join(' ', flood)} in {sw.Elapsed.TotalSeconds:F1} s");
        var (threadsPeak, fdsPeak) = Counts(broker.Pid);
        TestContext.Progress.WriteLine($"  broker before: {threads0} threads, {fds0} fds; during the flood: {threadsPeak} threads, {fdsPeak} fds");
        Assert.That(threadsPeak - threads0, Is.LessThanOrEqualTo(2048 + 16), "at most MaxConnectionsPerUid (2048) sessions of one uid");

        var root = Connect(broker, "root-during");
        root.Ok("create-container during 0");
        root.Ok("create-object o 4096");
        root.Ok("write o 0 10 7 5000");
        Assert.That(ClientProcess.Field(root.Ok("get o 0 10 5000"), "first"), Is.EqualTo("7"), "a legitimate client still works");

        flooder.Ok("flood-release", TimeSpan.FromMinutes(2));
        sw.Restart();
        var (threads1, fds1) = Counts(broker.Pid);
        while ((threads1 > threads0 + 8 || fds1 > fds0 + 8) && sw.Elapsed < TimeSpan.FromSeconds(60))
        {
            Thread.Sleep(100);
            (threads1, fds1) = Counts(broker.Pid);
        }

        TestContext.Progress.WriteLine($"  broker {sw.Elapsed.TotalSeconds:F1} s after the flood ended: {threads1} threads, {fds1} fds");
        Assert.That(threads1, Is.LessThanOrEqualTo(threads0 + 8), "the flood's session threads are gone");
        Assert.That(fds1, Is.LessThanOrEqualTo(fds0 + 8), "the flood's descriptors are closed");
    }

    [Test]
    public void Hello_NotSentInTime_ConnectionClosed()
    {
        // Contract: a connection that does not say hello within the hello timeout is closed (its thread ends).
        var broker = StartBroker("--system", "--hello-timeout-ms", "2000");
        var idler = StartClient("idler", asNobody: true);
        var sw = Stopwatch.StartNew();
        idler.Ok($"flood {broker.SocketPath} 20");
        Assert.That(idler.Ok("flood-check"), Does.Contain("open=20"), "within the hello timeout the broker keeps them");
        string state;
        while (!(state = string.Join(' ', idler.Ok("flood-check"))).Contains("closed=20", StringComparison.Ordinal))
        {
            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), $"silent connections were not closed: {state}");
            Thread.Sleep(50);
        }

        TestContext.Progress.WriteLine($"  20 silent connections closed by the broker {sw.Elapsed.TotalMilliseconds:F0} ms after they were opened (hello timeout 2000 ms)");
        Assert.That(sw.Elapsed, Is.GreaterThan(TimeSpan.FromMilliseconds(1500)), "not before the hello timeout");
    }

    private static long BytesInUse(BrokerProcess broker)
    {
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        return (long)client.Call(new Protocol.Request { Status = new Protocol.StatusRequest() }, TimeSpan.FromSeconds(10), default).Response.Status.BytesInUse;
    }

    private static int ChannelMemfds(int pid) =>
        Directory.GetFiles($"/proc/{pid}/fd").Count(fd =>
        {
            try
            {
                return new FileInfo(fd).LinkTarget?.Contains("sharedstore-channel", StringComparison.Ordinal) == true;
            }
            catch (IOException)
            {
                return false;
            }
        });

    /// <summary>The broker's thread count (/proc/PID/status) and open descriptors (/proc/PID/fd).</summary>
    private static (int Threads, int Fds) Counts(int pid)
    {
        int threads = 0;
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("Threads:", StringComparison.Ordinal))
            {
                threads = int.Parse(line.AsSpan(8).Trim(), CultureInfo.InvariantCulture);
            }
        }

        return (threads, Directory.GetFiles($"/proc/{pid}/fd").Length);
    }
}
