using System.Globalization;
using System.Text.RegularExpressions;

namespace SharedStore.FirstRun.Tests;

/// <summary>
/// The README's commands as a new user runs them: a fresh Unix user, a fresh copy of the repository, a fresh HOME (so
/// NuGet restores from nothing), no broker running and no runtime folder. Nothing is prepared for them: these tests
/// fail the way the user would (issue 12: the first command died because the broker it launched could not open its
/// log in a folder nobody had made).
/// </summary>
[TestFixture]
[NonParallelizable]
[Category("FirstRun")]
[Budget(1500)]
public sealed partial class ReadmeTests
{
    private static readonly TimeSpan s_command = TimeSpan.FromMinutes(8);
    private NewUser? _user;

    private NewUser User => _user ?? throw new InvalidOperationException("no user");

    [OneTimeSetUp]
    public void MakeUser()
    {
        if (!NewUser.CanCreate(out string why))
        {
            Assert.Ignore(why);
        }

        _user = NewUser.Create();
    }

    [OneTimeTearDown]
    public void RemoveUser() => _user?.Dispose();

    [Test]
    public void FirstCommand_FreshUserAndRuntimeFolder_SampleVerifiesAndSecondRunReusesTheBroker()
    {
        // Contract (README, first command): `dotnet run --project samples/ReaderWriter` starts a broker in the
        // background when none runs, exits 0 with the sample's OK line, and the next run uses that same broker.
        // XDG_RUNTIME_DIR names a new, empty folder of the user's: the broker must make sharedstore/ inside it.
        string home = User.NewFolder("home");
        string runtime = User.NewFolder("xdg");
        var env = new Dictionary<string, string?> { ["XDG_RUNTIME_DIR"] = runtime };

        int first = RunSample(home, env);
        string folder = Path.Combine(runtime, "sharedstore");
        AssertFolder(folder, 0x1C0);
        int second = RunSample(home, env);
        Assert.That(second, Is.EqualTo(first), "the second run must reuse the broker the first one started");
    }

    [Test]
    public void FirstCommand_FreshUserWithoutXdgRuntimeDir_BrokerMakesTmpFolderAndSecondRunReusesIt()
    {
        // Contract: without XDG_RUNTIME_DIR the socket is /tmp/sharedstore-UID/broker.sock; for a user who never ran
        // SharedStore that folder does not exist, and the broker makes it (0700, the user's).
        string folder = Path.Combine("/tmp", string.Create(CultureInfo.InvariantCulture, $"sharedstore-{User.Uid}"));
        Assert.That(Directory.Exists(folder), Is.False, $"{folder} must not exist before a new user's first run");
        string home = User.NewFolder("home");
        var env = new Dictionary<string, string?>();

        int first = RunSample(home, env);
        AssertFolder(folder, 0x1C0);
        int second = RunSample(home, env);
        Assert.That(second, Is.EqualTo(first), "the second run must reuse the broker the first one started");
    }

    [Test]
    public void PackagedTool_FreshHome_PackInstallStartSampleListStop()
    {
        // Contract (README, "The sharedstore command"): pack, install the tool from the local folder, start a broker
        // with it, run the sample against that broker, list the sample's container, stop the broker. From a fresh
        // HOME and a fresh runtime folder; the broker's socket folder is 0700 (ARCHITECTURE §1).
        string home = User.NewFolder("home");
        string runtime = User.NewFolder("xdg");
        string tools = Path.Combine(home, "tools");
        var env = new Dictionary<string, string?> { ["XDG_RUNTIME_DIR"] = runtime };

        Ok(User.Run("dotnet pack -c Release -o ./artifacts", home, env, s_command));
        Ok(User.Run($"dotnet tool install --tool-path '{tools}' --add-source ./artifacts sharedstore", home, env, s_command));
        string sharedstore = Path.Combine(tools, "sharedstore");

        string started = Ok(User.Run($"'{sharedstore}' broker start", home, env, TimeSpan.FromMinutes(2)));
        Assert.That(started, Does.Contain("broker started"), started);
        AssertFolder(Path.Combine(runtime, "sharedstore"), 0x1C0);
        int brokerPid = int.Parse(PidPattern().Match(started).Groups[1].Value, CultureInfo.InvariantCulture);

        string sample = Ok(User.Run("dotnet run --project samples/ReaderWriter -- --keep", home, env, s_command));
        Assert.That(sample, Does.Contain("[launcher] OK:"), sample);
        Assert.That(LauncherBrokerPid(sample), Is.EqualTo(brokerPid), "the sample must use the broker `sharedstore broker start` started");
        string container = KeptPattern().Match(sample).Groups[1].Value;
        Assert.That(container, Is.Not.Empty, sample);

        string ls = Ok(User.Run($"'{sharedstore}' ls", home, env, TimeSpan.FromMinutes(2)));
        Assert.That(ls, Does.Contain(container), ls);

        string stopped = Ok(User.Run($"'{sharedstore}' broker stop", home, env, TimeSpan.FromMinutes(2)));
        Assert.That(stopped, Does.Contain("broker stopped"), stopped);
        Assert.That(File.Exists(Path.Combine(runtime, "sharedstore", "broker.sock")), Is.False, "the socket goes with the broker");
    }

    /// <summary>Runs the README's first command; returns the broker pid the launcher reported.</summary>
    private int RunSample(string home, Dictionary<string, string?> env)
    {
        string output = Ok(User.Run("dotnet run --project samples/ReaderWriter", home, env, s_command));
        Assert.That(output, Does.Contain("[launcher] OK: the reader verified"), output);
        return LauncherBrokerPid(output);
    }

    private static int LauncherBrokerPid(string output)
    {
        var m = LauncherPattern().Match(output);
        Assert.That(m.Success, Is.True, $"the launcher did not report its broker:\n{output}");
        return int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private void AssertFolder(string folder, int mode)
    {
        Assert.That(Directory.Exists(folder), Is.True, $"{folder} was not made");
        var info = new DirectoryInfo(folder);
        Assert.That((int)info.UnixFileMode, Is.EqualTo(mode), $"{folder} has mode {Convert.ToString((int)info.UnixFileMode, 8)}");
        Assert.That(Owner(folder), Is.EqualTo(User.Uid), $"{folder} must belong to the user");
    }

    private static uint Owner(string path) => Folders.Owner(path);

    private static string Ok((int Exit, string Output) r)
    {
        Assert.That(r.Exit, Is.Zero, r.Output);
        return r.Output;
    }

    [GeneratedRegex(@"\[launcher\] broker pid (\d+)")]
    private static partial Regex LauncherPattern();

    [GeneratedRegex(@"broker started: pid (\d+)")]
    private static partial Regex PidPattern();

    [GeneratedRegex("kept container \"([^\"]+)\"")]
    private static partial Regex KeptPattern();
}
