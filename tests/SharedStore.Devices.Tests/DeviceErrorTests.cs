using NUnit.Framework;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>
/// The device library's failures are SharedStoreExceptions (issue 14, item 3): the errno maps to an
/// <see cref="ErrorCode"/>, and the exception keeps the errno. Seen failing on the old code, where DeviceException
/// derived from IOException and Interop.Libc.Error made a plain IOException (the tests did not compile against it: no
/// Code, no ErrorCode.IoError).
/// </summary>
[TestFixture]
[Category("Devices")]
public sealed class DeviceErrorTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine("/var/tmp", $"sharedstore-deverr-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void OpenMissingFile_IsSharedStoreExceptionNotFound_WithErrno()
    {
        var e = Assert.Throws<DeviceException>(() => new RandomAccessFileDevice(Path.Combine(_dir, "missing"), DeviceMode.None));
        Assert.That(e, Is.InstanceOf<SharedStoreException>());
        Assert.That(e!.Code, Is.EqualTo(ErrorCode.NotFound));
        Assert.That(e.Errno, Is.EqualTo(2)); // ENOENT
    }

    [Test]
    public void ReadOnlyDevice_SetSize_IsPermissionDenied()
    {
        string path = Path.Combine(_dir, "ro");
        File.WriteAllBytes(path, new byte[10]);
        using var d = new RandomAccessFileDevice(path, DeviceMode.ReadOnly);
        SharedStoreException e = Assert.Throws<DeviceException>(() => d.SetSize(100))!;
        Assert.That(e.Code, Is.EqualTo(ErrorCode.PermissionDenied));
    }

    [TestCase(5, ErrorCode.IoError)]              // EIO
    [TestCase(9, ErrorCode.IoError)]              // EBADF
    [TestCase(28, ErrorCode.NoResources)]         // ENOSPC
    [TestCase(122, ErrorCode.NoResources)]        // EDQUOT
    [TestCase(13, ErrorCode.PermissionDenied)]    // EACCES
    [TestCase(30, ErrorCode.PermissionDenied)]    // EROFS
    [TestCase(17, ErrorCode.AlreadyExists)]       // EEXIST
    [TestCase(125, ErrorCode.Canceled)]           // ECANCELED
    public void KernelError_MapsToItsCode_AndKeepsTheErrno(int errno, ErrorCode expected)
    {
        var e = new DeviceException("write failed", errno);
        Assert.That(e.Code, Is.EqualTo(expected));
        Assert.That(e.Errno, Is.EqualTo(errno));
        Assert.That(e.SeedReturnValue, Is.EqualTo(-(int)expected));
    }

    [Test]
    public void LibcError_IsSharedStoreException_CarryingTheErrno()
    {
        SharedStoreException e = Interop.Libc.Error("fchmod of a memfd", 5);
        Assert.That(e.Code, Is.EqualTo(ErrorCode.IoError));
        Assert.That(e.Errno, Is.EqualTo(5));
        Assert.That(e.Message, Does.Contain("fchmod of a memfd").And.Contain("errno 5"));
    }
}
