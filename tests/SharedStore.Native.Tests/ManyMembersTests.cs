using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;

namespace SharedStore.Native.Tests;

/// <summary>
/// A container of 1 024 member processes (issue 16): the test's own client and 1 023 small C processes
/// (<c>c/member.c</c> over libsharedstore.so, a few MiB each), every one of them taking and releasing read leases on
/// block 0 while the test writes it, kill -9 of a random tenth of them in the middle, and the 1 025th refused.
/// The lock records of such a container have 17 reader lines, so the members' slots are spread over all of them.
/// </summary>
[TestFixture]
[Budget(600)]
public sealed class ManyMembersTests
{
    private const int Members = 1024;
    private static readonly TimeSpan s_start = TimeSpan.FromMinutes(4);
    private static readonly TimeSpan s_write = TimeSpan.FromSeconds(60);

    [Test]
    public void Container_Of1024Members_LeasesTortureAndRecovery_LeaveNothingHeldAndNoSlotLeaked()
    {
        // Contract: a container created with MaxMembers = 1024 admits 1 024 member processes and refuses the 1 025th
        // with NoResources; writes keep getting in while every member takes leases (writer priority); a kill -9 of a
        // tenth of them releases everything they held; their slots are given to new members; when everyone has
        // left, no lock of the block is held or waited on.
        using var broker = BrokerProcess.Start();
        using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = broker.SocketPath });
        using var con = client.CreateContainer("many", SharedStoreClient.ProcessGroupId, new ContainerOptions { MaxMembers = Members });
        using var obj = con.CreateObject("A", 1 << 20);
        Assert.That(con.MaxMembers, Is.EqualTo(Members));
        var members = new List<Member>();
        try
        {
            // 1. 1 023 C members join (the test's own client is the 1 024th).
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < Members - 1; i++)
            {
                members.Add(Member.Start(broker.SocketPath, "loop"));
            }

            foreach (var m in members)
            {
                Assert.That(m.NextLine(s_start - sw.Elapsed), Is.EqualTo("joined"), m.Log);
            }

            TestContext.Progress.WriteLine($"{Members - 1} C members joined in {sw.Elapsed.TotalSeconds:F1} s");
            Assert.That(client.ListContainers().Single().MemberPids, Has.Count.EqualTo(Members));

            // 2. The 1 025th is refused, and holds nothing.
            AssertRefused(broker.SocketPath);

            // 3. Writes get in while every member takes leases.
            byte[] data = new byte[4096];
            for (int round = 0; round < 3; round++)
            {
                data.AsSpan().Fill((byte)(round + 1));
                obj.Write(0, data, s_write);
            }

            // 4. kill -9 of a random tenth, while they take leases; writes still get in, and every hold of the dead
            // is released (the writes below wait for every read hold of block 0 to drain).
            var rnd = new Random(16);
            var victims = members.OrderBy(_ => rnd.Next()).Take(Members / 10).ToList();
            foreach (var v in victims)
            {
                v.Kill9();
            }

            WaitUntil(() => client.ListContainers().Single().MemberPids.Count == Members - victims.Count, s_write, "the broker to drop the killed members");
            for (int round = 0; round < 3; round++)
            {
                data.AsSpan().Fill((byte)(round + 10));
                obj.Write(0, data, s_write);
            }

            // 5. No slot leaked: as many new members join as died, and the next one is refused again.
            members.RemoveAll(victims.Contains);
            foreach (var v in victims)
            {
                v.Dispose();
            }

            var fresh = Enumerable.Range(0, victims.Count).Select(_ => Member.Start(broker.SocketPath, "loop")).ToList();
            members.AddRange(fresh);
            foreach (var m in fresh)
            {
                Assert.That(m.NextLine(s_start), Is.EqualTo("joined"), m.Log);
            }

            AssertRefused(broker.SocketPath);
            obj.Write(0, data, s_write);

            // 6. Everyone leaves (end of stdin): nothing of block 0 is held, claimed or waited on, and every member exits 0.
            foreach (var m in members)
            {
                m.CloseInput();
            }

            foreach (var m in members)
            {
                Assert.That(m.WaitForExit(s_write), Is.EqualTo(0), m.Log);
            }

            WaitUntil(() => client.ListContainers().Single().MemberPids.Count == 1, s_write, "every C member to leave");
            var holders = client.Holders("many", "A");
            Assert.That(holders.Blocks, Is.Empty, "no read, write or waiting writer is left on the block");
            using (var lease = obj.Get(0, 4096, TimeSpan.FromSeconds(10)))
            {
                Assert.That(lease.Span[0], Is.EqualTo(12), "the last write is what a reader sees");
                Assert.That(lease.Torn, Is.False, "no writer died: nothing is torn");
            }
        }
        finally
        {
            foreach (var m in members)
            {
                m.Dispose();
            }
        }
    }

    private static void AssertRefused(string socket)
    {
        using var extra = Member.Start(socket, "loop");
        Assert.That(extra.NextLine(s_start), Is.EqualTo("err -4"), "the member over MaxMembers gets NoResources; " + extra.Log);
        Assert.That(extra.WaitForExit(s_write), Is.EqualTo(2), extra.Log);
    }

    private static void WaitUntil(Func<bool> condition, TimeSpan timeout, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > timeout)
            {
                Assert.Fail($"timed out after {timeout} waiting for {what}");
            }

            Thread.Sleep(50);
        }
    }

    /// <summary>One <c>member</c> C process and the lines it printed.</summary>
    private sealed class Member : IDisposable
    {
        private readonly StringBuilder _stderr = new();
        private readonly BlockingCollection<string> _lines = [];
        private readonly Process _process;

        private Member(string socket, string mode)
        {
            var env = new Dictionary<string, string> { ["SHAREDSTORE_SOCKET"] = socket };
            _process = ChildProcess.Start([NativeLibrary.Program("member"), "many", "A", mode], _stderr, _lines.Add, env);
        }

        public static Member Start(string socket, string mode) => new(socket, mode);

        public string Log => $"member pid {_process.Id} stderr:\n{ChildProcess.Text(_stderr)}";

        public string? NextLine(TimeSpan timeout) =>
            _lines.TryTake(out string? line, timeout < TimeSpan.Zero ? TimeSpan.Zero : timeout) ? line : $"(no line within {timeout})";

        public void Kill9() => ChildProcess.Signal(_process, 9);

        public void CloseInput() => _process.StandardInput.Close();

        public int WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout) ? _process.ExitCode : -1;

        public void Dispose()
        {
            ChildProcess.KillAndWait(_process);
            _process.Dispose();
        }
    }
}
