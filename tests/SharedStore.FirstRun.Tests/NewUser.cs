using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace SharedStore.FirstRun.Tests;

/// <summary>
/// A Unix user made for one fixture (useradd), with a fresh copy of the repository and fresh HOME folders of its own:
/// what a new user has on the first day. Commands run as that user through runuser with a clean environment (only
/// the machine's own DOTNET_*/NUGET_* settings pass through). Dispose kills whatever the user still runs (brokers it
/// started), deletes the user and its folders.
/// </summary>
internal sealed class NewUser : IDisposable
{
    private NewUser(string name, uint uid, string root)
    {
        Name = name;
        Uid = uid;
        Root = root;
    }

    public string Name { get; }

    public uint Uid { get; }

    /// <summary>A folder of the user's own under /tmp (0755), holding its repository copy and homes.</summary>
    public string Root { get; }

    /// <summary>The user's copy of the repository (tracked and untracked, not ignored, files of this checkout).</summary>
    public string Repo => Path.Combine(Root, "repo");

    /// <summary>Whether this machine can make users (root, useradd, runuser); the reason when not.</summary>
    public static bool CanCreate(out string why)
    {
        why = "";
        if (SharedStore.Tests.Harness.Interop.GetUid() != 0)
        {
            why = "making a new Unix user needs root";
            return false;
        }

        foreach (string tool in new[] { "/usr/sbin/useradd", "/usr/sbin/userdel", "/usr/sbin/runuser" })
        {
            if (!File.Exists(tool))
            {
                why = $"{tool} is not installed (tools/setup.sh installs it)";
                return false;
            }
        }

        return true;
    }

    /// <summary>Creates the user and gives it a fresh copy of the repository.</summary>
    public static NewUser Create()
    {
        string name = "ssfr" + Guid.NewGuid().ToString("N")[..10];
        string root = Path.Combine("/tmp", name);
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED); // 0755
        Must("/usr/sbin/useradd", "--no-create-home", "--home-dir", Path.Combine(root, "home"), "--shell", "/bin/sh", name);
        uint uid = uint.Parse(Must("/usr/bin/id", "-u", name).Trim(), CultureInfo.InvariantCulture);
        var user = new NewUser(name, uid, root);
        try
        {
            CopyRepository(RepoRoot(), user.Repo);
            Must("/bin/chown", "-R", $"{name}:{name}", root);
            return user;
        }
        catch
        {
            user.Dispose();
            throw;
        }
    }

    /// <summary>A new empty folder owned by the user (a HOME, a runtime folder), mode 0700.</summary>
    public string NewFolder(string label)
    {
        string dir = Path.Combine(Root, $"{label}-{Guid.NewGuid():N}"[..(label.Length + 9)]);
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, (UnixFileMode)0x1C0); // 0700
        Must("/bin/chown", $"{Name}:{Name}", dir);
        return dir;
    }

    /// <summary>Runs <paramref name="command"/> with /bin/sh as the user in <paramref name="workDir"/>, with HOME and the
    /// given variables only. Returns the exit code and the interleaved output; throws on timeout.</summary>
    public (int Exit, string Output) Run(string command, string home, IDictionary<string, string?> env, TimeSpan timeout, string? workDir = null)
    {
        var psi = new ProcessStartInfo("/usr/sbin/runuser") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (string a in new[] { "-u", Name, "--", "/usr/bin/env", "-i" })
        {
            psi.ArgumentList.Add(a);
        }

        var vars = new Dictionary<string, string?>
        {
            ["HOME"] = home,
            ["USER"] = Name,
            ["LOGNAME"] = Name,
            ["PATH"] = "/usr/local/bin:/usr/bin:/bin",
            ["LANG"] = "C.UTF-8",
        };
        foreach (var kv in Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>())
        {
            string key = (string)kv.Key;
            if (key.StartsWith("DOTNET_", StringComparison.Ordinal) && key != "DOTNET_HOST_PATH" || key.StartsWith("NUGET_", StringComparison.Ordinal) && key != "NUGET_PACKAGES")
            {
                vars[key] = (string?)kv.Value; // the machine's settings, not the user's state
            }
        }

        foreach (var kv in env)
        {
            vars[kv.Key] = kv.Value;
        }

        foreach (var kv in vars)
        {
            if (kv.Value is not null)
            {
                psi.ArgumentList.Add($"{kv.Key}={kv.Value}");
            }
        }

        psi.ArgumentList.Add("/bin/sh");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"cd '{workDir ?? Repo}' && {command}");

        var output = new StringBuilder();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit(10_000);
            lock (output)
            {
                Assert.Fail($"`{command}` as {Name} did not finish within {timeout.TotalSeconds:0} s; output:\n{output}");
            }
        }

        p.WaitForExit(); // drain the pipes
        lock (output)
        {
            TestContext.Progress.WriteLine($"$ {command}   (as {Name}, exit {p.ExitCode})");
            return (p.ExitCode, output.ToString());
        }
    }

    public void Dispose()
    {
        // Brokers the user started run in sessions of their own: end them (and anything else of the user's) first.
        _ = Run0("/usr/bin/pkill", "-TERM", "-u", Name);
        var sw = Stopwatch.StartNew();
        while (Run0("/usr/bin/pgrep", "-u", Name) == 0 && sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(100);
        }

        _ = Run0("/usr/bin/pkill", "-KILL", "-u", Name);
        sw.Restart();
        while (Run0("/usr/bin/pgrep", "-u", Name) == 0 && sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(100);
        }

        _ = Run0("/usr/sbin/userdel", Name);
        foreach (string dir in new[] { Root, Path.Combine("/tmp", $"sharedstore-{Uid}") })
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // best effort
            }
        }
    }

    /// <summary>The checkout these tests were built from (the folder holding SharedStore.sln).</summary>
    public static string RepoRoot()
    {
        for (string? d = AppContext.BaseDirectory; d is not null; d = Path.GetDirectoryName(d))
        {
            if (File.Exists(Path.Combine(d, "SharedStore.sln")))
            {
                return d;
            }
        }

        throw new InvalidOperationException($"no SharedStore.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>A fresh clone as it would be of this checkout's current state: every file git tracks or would track
    /// (untracked, not ignored), none of the build output.</summary>
    private static void CopyRepository(string from, string to)
    {
        string list = Must("/usr/bin/git", "-C", from, "ls-files", "-z", "--cached", "--others", "--exclude-standard");
        foreach (string rel in list.Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            string src = Path.Combine(from, rel);
            if (!File.Exists(src))
            {
                continue; // deleted in the working tree, not yet committed
            }

            string dst = Path.Combine(to, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(dst)!);
            File.Copy(src, dst);
        }
    }

    private static string Must(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000))
        {
            p.Kill();
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} did not finish within 60 s");
        }

        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}");
        }

        return stdout.Result;
    }

    private static int Run0(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            using var p = Process.Start(psi)!;
            p.StandardOutput.ReadToEnd();
            p.WaitForExit(30_000);
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }
}
