using System.Diagnostics;
using System.Text;

namespace SharedStore.Native.Tests;

/// <summary>
/// Once per test run: publishes libsharedstore.so exactly as the README says
/// (<c>dotnet publish src/SharedStore.Native -c Release -r linux-x64 -o artifacts/native</c>), builds the C samples
/// with their Makefile, and compiles the C test programs into a scratch directory (mode 0755, so the user nobody can
/// run them). A failed publish or compile fails every test here with the tool's output.
/// </summary>
[SetUpFixture]
public sealed class NativeLibrary
{
    private static string? s_failure;

    /// <summary>The repository root (the directory holding SharedStore.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>artifacts/native: libsharedstore.so and broker/.</summary>
    public static string LibraryDirectory => Path.Combine(RepoRoot, "artifacts", "native");

    /// <summary>Where the compiled C test programs are.</summary>
    public static string BinDirectory { get; private set; } = "";

    public static string Program(string name)
    {
        if (s_failure is not null)
        {
            Assert.Fail(s_failure);
        }

        return Path.Combine(BinDirectory, name);
    }

    public static string Sample(string name)
    {
        if (s_failure is not null)
        {
            Assert.Fail(s_failure);
        }

        return Path.Combine(RepoRoot, "samples", "c", name);
    }

    [OneTimeSetUp]
    public void PublishAndCompile()
    {
        var sw = Stopwatch.StartNew();
        BinDirectory = BrokerProcess.NewDirectory();
        s_failure = Step("dotnet publish", ChildProcess.DotnetHost,
            ["publish", Path.Combine(RepoRoot, "src", "SharedStore.Native"), "-c", "Release", "-r", "linux-x64", "-o", LibraryDirectory],
            TimeSpan.FromMinutes(10));
        TestContext.Progress.WriteLine($"libsharedstore.so published in {sw.Elapsed.TotalSeconds:F0} s");
        s_failure ??= Step("make -C samples/c", "make", ["-C", Path.Combine(RepoRoot, "samples", "c")], TimeSpan.FromMinutes(2));

        // valgrind 3.19 gives up on the DWARF 5 of libsharedstore.so.dbg ("possibly corrupted debuginfo file"), which
        // it finds beside the library: the valgrind build links a copy of the library without it.
        string vglib = Path.Combine(BinDirectory, "vglib");
        Directory.CreateDirectory(vglib);
        if (s_failure is null)
        {
            File.Copy(Path.Combine(LibraryDirectory, "libsharedstore.so"), Path.Combine(vglib, "libsharedstore.so"), overwrite: true);
        }

        string src = Path.Combine(RepoRoot, "tests", "SharedStore.Native.Tests", "c");
        string[] common = ["-Wall", "-Wextra", "-Werror", "-std=c11", "-D_GNU_SOURCE", "-pthread", $"-I{Path.Combine(RepoRoot, "include")}"];
        string[] link = [$"-L{LibraryDirectory}", "-lsharedstore", $"-Wl,-rpath,{LibraryDirectory}"];
        s_failure ??= Gcc(["-O2", "-g", .. common, "-o", Program("seedcalls"), Path.Combine(src, "seedcalls.c"), .. link]);
        s_failure ??= Gcc(["-O2", "-g", .. common, "-o", Program("threads"), Path.Combine(src, "threads.c"), .. link]);
        s_failure ??= Gcc(["-O2", "-g", .. common, "-o", Program("member"), Path.Combine(src, "member.c"), .. link]);
        s_failure ??= Gcc(["-O2", .. common, $"-I{Path.Combine(RepoRoot, "src", "SharedStore.Native", "native")}", "-o", Program("fastpath_layout"), Path.Combine(src, "fastpath_layout.c")]);
        // Written against the seed's text alone: its own prototypes, no include/sharedstore.h.
        s_failure ??= Gcc(["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-o", Program("seed_only"), Path.Combine(src, "seed_only.c"), .. link]);
        s_failure ??= Gcc(["-O1", "-gdwarf-4", .. common, "-o", Program("seedcalls-vg"), Path.Combine(src, "seedcalls.c"),
            $"-L{vglib}", "-lsharedstore", $"-Wl,-rpath,{vglib}"]);
        s_failure ??= Gcc(["-O2", "-Wall", "-Werror", "-o", Program("no_io_uring"), Path.Combine(src, "no_io_uring.c")]);
        TestContext.Progress.WriteLine($"native setup done in {sw.Elapsed.TotalSeconds:F0} s");
    }

    [OneTimeTearDown]
    public void RemoveScratch()
    {
        try
        {
            Directory.Delete(BinDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Runs a program to completion; the result holds its exit code and both outputs.</summary>
    public static RunResult Run(IReadOnlyList<string> argv, IDictionary<string, string>? env, TimeSpan timeout, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(argv[0])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            WorkingDirectory = workingDirectory ?? BinDirectory,
        };
        foreach (string a in argv.Skip(1))
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var kv in env ?? new Dictionary<string, string>())
        {
            psi.Environment[kv.Key] = kv.Value;
        }

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            ChildProcess.KillAndWait(p);
            p.WaitForExit();
            return new RunResult(-1, ChildProcess.Text(stdout), ChildProcess.Text(stderr) + $"\n(killed: no exit within {timeout})");
        }

        p.WaitForExit(); // drain the redirected streams
        return new RunResult(p.ExitCode, ChildProcess.Text(stdout), ChildProcess.Text(stderr));
    }

    private static string? Gcc(string[] args) => Step("gcc", "gcc", args, TimeSpan.FromMinutes(2));

    private static string? Step(string what, string file, IReadOnlyList<string> args, TimeSpan timeout)
    {
        var r = Run([file, .. args], null, timeout, RepoRoot);
        return r.ExitCode == 0 ? null : $"{what} failed (exit {r.ExitCode}):\n{r.Stdout}\n{r.Stderr}";
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "SharedStore.sln")))
            {
                return d.FullName;
            }
        }

        throw new InvalidOperationException($"no SharedStore.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>A finished program: exit code (-1 when it was killed for running too long) and its outputs.</summary>
public sealed record RunResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}
