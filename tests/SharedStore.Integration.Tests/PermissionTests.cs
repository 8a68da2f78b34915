namespace SharedStore.Integration.Tests;

/// <summary>Access by Unix credentials with a real second user (nobody, uid/gid 65534) on a --system broker.</summary>
public sealed class PermissionTests : CrossProcessTest
{
    private BrokerProcess _broker = null!;
    private ClientProcess _root = null!;
    private ClientProcess _nobody = null!;

    [SetUp]
    public void StartProcesses() => (_broker, _root, _nobody) = StartSystemBrokerWithNobody();

    [Test]
    public void ContainerJoin_UserNotInTheGroup_FailsWithPermissionDenied()
    {
        // Contract: container_join is granted to members of the container's group, its creator and root only; another
        // user gets PermissionDenied.
        _root.Ok("create-container rootonly 0");
        _nobody.Err("join-container rootonly", "PermissionDenied");
        _nobody.Err("create-container forroot 0", "PermissionDenied");
    }

    [Test]
    public void CreatorOnly_OtherUserInTheGroup_ReadsButCannotWrite()
    {
        // Contract: in a creator-only container a group member joins and reads (get) what the creator wrote, but its
        // object_write (and object_create) fails with PermissionDenied.
        _root.Ok($"create-container shared {ClientProcess.NobodyId} creator-only");
        _root.Ok($"create-object o {2L << 20}");
        string sum = _root.Ok($"write-pattern o 0 {2L << 20} 3 5000")[0];

        var joined = _nobody.Ok("join-container shared");
        Assert.That(ClientProcess.Field(joined, "canwrite"), Is.EqualTo("0"));
        _nobody.Ok("join-object o");
        Assert.That(_nobody.Ok($"read o 0 {2L << 20}")[0], Is.EqualTo(sum));
        string lease = _nobody.Ok("get o 0 10 5000")[0];
        _nobody.Ok($"put {lease}");

        _nobody.Err("write o 0 10 1 5000", "PermissionDenied");
        _nobody.Err("create-object mine 4096", "PermissionDenied");
        _nobody.Err("destroy-object o 1000", "PermissionDenied");
        Assert.That(_root.Ok($"read o 0 {2L << 20}")[0], Is.EqualTo(sum), "the refused write must not have written");
    }

    [Test]
    public void AllMembers_OtherUserInTheGroup_Writes()
    {
        // Contract: in an all-members container a group member (not the creator) may write.
        _root.Ok($"create-container open {ClientProcess.NobodyId}");
        _root.Ok("create-object o 4096");
        _nobody.Ok("join-container open");
        _nobody.Ok("join-object o");
        _nobody.Ok("write o 0 10 77 5000");
        Assert.That(ClientProcess.Field(_root.Ok("get o 0 10 5000"), "first"), Is.EqualTo("77"));
        _nobody.Err("destroy-container 1000", "PermissionDenied"); // only the creator or root destroys
    }
}
