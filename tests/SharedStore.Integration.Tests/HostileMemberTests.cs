namespace SharedStore.Integration.Tests;

/// <summary>
/// Issue 13, finding 1: what a member can do with the descriptors the broker hands it, tried for real by the user
/// nobody (uid/gid 65534) against a --system broker running as root. The hostile client speaks the protocol itself and
/// keeps its descriptors (HostileCommands in the test client); each attack reports the kernel's refusal, or WROTE when
/// it got through (and then really wrote, so the creator's read-back shows it too). docs/ARCHITECTURE.md §2 states what
/// each kind of member can and cannot do.
/// </summary>
public sealed class HostileMemberTests : CrossProcessTest
{
    private const long ObjectSize = 2L << 20; // 2 MiB: a shared segment, 4 KiB aligned

    private static readonly string[] s_dataAttacks = ["reopen-rdwr", "reopen-wronly", "mmap-rw", "mprotect", "procmem", "pwrite", "fchmod", "punch", "seal"];

    private BrokerProcess _broker = null!;
    private ClientProcess _root = null!;
    private ClientProcess _nobody = null!;

    [SetUp]
    public void StartProcesses() => (_broker, _root, _nobody) = StartSystemBrokerWithNobody();

    [Test]
    public void ReadOnlyMember_EveryWayToWriteTheData_IsRefusedByTheKernel()
    {
        // Contract: a read-only member (creator-only container; neither the creator's uid nor root) gets no writable
        // mapping or descriptor of the data, by any path: reopening its descriptor through /proc/self/fd, mapping it
        // writable, mprotect, /proc/self/mem, fchmod, punching holes, sealing, nor through a child it passes the
        // descriptor to. It cannot resize the lock memfd it maps read-write either. The creator reads back its bytes
        // unchanged.
        _root.Ok($"create-container ro {ClientProcess.NobodyId} creator-only");
        _root.Ok($"create-object o {ObjectSize}");
        string written = _root.Ok($"write-pattern o 0 {ObjectSize} 13 5000")[0];

        var joined = _nobody.Ok($"raw-join {_broker.SocketPath} ro o");
        Assert.That(ClientProcess.Field(joined, "readonly"), Is.EqualTo("1"), "nobody is a read-only member");

        AssertAllRefused(_nobody.Ok("attack-data"), s_dataAttacks, "in the member's own process");
        var passed = _nobody.Ok("attack-pass");
        Assert.That(ClientProcess.Field(passed, "inherited"), Is.EqualTo("1"), "the child must hold the descriptor it attacks");
        AssertAllRefused(passed, s_dataAttacks, $"in a child it passed the descriptor to ({passed[0]})");
        AssertAllRefused(_nobody.Ok("attack-size"), ["data-shrink", "data-grow", "lock-shrink", "lock-grow"], "resizing");

        Assert.That(_root.Ok($"read o 0 {ObjectSize}")[0], Is.EqualTo(written), "the creator must read back its bytes unchanged");
        Assert.That(_broker.Process.HasExited, Is.False, $"the broker died; stderr:\n{_broker.Stderr}");
    }

    [Test]
    public void Writer_ResizingAnyMemfd_IsRefusedAndTheBrokerKeepsServing()
    {
        // Contract: a member that may write (all-members container) holds read-write descriptors of the data and lock
        // memfds, and of its own asynchronous channel, but cannot change their sizes: a memfd that shrank would make
        // every process that maps it fault (SIGBUS), the broker first. The broker and the creator carry on.
        _root.Ok($"create-container rw {ClientProcess.NobodyId}");
        _root.Ok($"create-object o {ObjectSize}");
        var joined = _nobody.Ok($"raw-join {_broker.SocketPath} rw o");
        Assert.That(ClientProcess.Field(joined, "readonly"), Is.EqualTo("0"), "nobody may write here");
        _nobody.Ok("raw-channel");

        AssertAllRefused(_nobody.Ok("attack-size"), ["data-shrink", "data-grow", "lock-shrink", "lock-grow", "channel-shrink", "channel-grow"], "resizing");

        string written = _root.Ok($"write-pattern o 0 {ObjectSize} 14 5000")[0];
        Assert.That(_root.Ok($"read o 0 {ObjectSize}")[0], Is.EqualTo(written));
        _root.Ok("create-object after 4096"); // the broker still serves, and maps its segments
        Assert.That(_broker.Process.HasExited, Is.False, $"the broker died; stderr:\n{_broker.Stderr}");
    }

    /// <summary>Every listed attack was answered by a refusal (the errno of the call that failed), none got through
    /// (WROTE, SHRUNK, GREW, SEALED; CHMOD-… when fchmod worked but the reopen did not).</summary>
    private static void AssertAllRefused(string[] answer, string[] attacks, string where)
    {
        TestContext.Progress.WriteLine($"  {where}: {string.Join(' ', answer)}");
        foreach (string attack in attacks)
        {
            string outcome = ClientProcess.Field(answer, attack);
            Assert.That(outcome, Is.Not.AnyOf("WROTE", "SHRUNK", "GREW", "SEALED").And.Not.StartWith("CHMOD"),
                $"{attack} {where} must be refused by the kernel, but: {outcome}");
        }
    }
}
