using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static IEnumerable<IScenario> NativeScenarios() =>
    [
        new NativeGetPut(),
        new PythonGet64MiB(),
        new NativeLibraryCost(),
    ];
}

/// <summary>
/// The scenarios of libsharedstore.so (issue 15). The library is the published one (artifacts/native; published first
/// when missing); the C side (Native/native_bench.c) is compiled with gcc into the work directory and the Python side
/// (Native/py_bench.py) runs on Debian's python3 with the repository's bindings/python. Both print JSON rows in this
/// tool's format, which are read back as results.
/// </summary>
internal static class NativeBench
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string LibraryDirectory => Path.Combine(RepoRoot, "artifacts", "native");

    public static string Library => Path.Combine(LibraryDirectory, "libsharedstore.so");

    private static string Sources => Path.Combine(RepoRoot, "tools", "SharedStore.Bench", "Native");

    /// <summary>Publishes the library if it is missing and compiles native_bench.c; returns the program's path.</summary>
    public static string CompileCBench(BenchContext context)
    {
        if (!File.Exists(Library))
        {
            context.Log.WriteLine("  publishing libsharedstore.so (artifacts/native was empty)");
            Run(ChildProcess.DotnetHost(), ["publish", Path.Combine(RepoRoot, "src", "SharedStore.Native"), "-c", "Release", "-r", "linux-x64", "-o", LibraryDirectory],
                null, TimeSpan.FromMinutes(10));
        }

        string exe = Path.Combine(context.WorkDirectory, "native_bench");
        Run("gcc", ["-O2", "-Wall", "-std=c11", "-pthread", $"-I{Path.Combine(RepoRoot, "include")}", "-o", exe, Path.Combine(Sources, "native_bench.c"),
            $"-L{LibraryDirectory}", "-lsharedstore", "-ldl", $"-Wl,-rpath,{LibraryDirectory}"], null, TimeSpan.FromMinutes(2));
        return exe;
    }

    public static string PyBench => Path.Combine(Sources, "py_bench.py");

    public static Dictionary<string, string> PythonEnv(BenchBroker broker) => new()
    {
        ["SHAREDSTORE_SOCKET"] = broker.SocketPath,
        ["PYTHONPATH"] = Path.Combine(RepoRoot, "bindings", "python"),
        ["SHAREDSTORE_LIBRARY"] = Library,
    };

    /// <summary>Runs a program and returns its stdout; throws with its output when it fails.</summary>
    public static string Run(string file, IEnumerable<string> args, IDictionary<string, string>? env, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var kv in env ?? new Dictionary<string, string>())
        {
            psi.Environment[kv.Key] = kv.Value;
        }

        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} did not finish within {timeout}");
        }

        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed (exit {p.ExitCode}):\n{stdout.Result}\n{stderr.Result}");
        }

        return stdout.Result;
    }

    /// <summary>The JSON rows a native or Python bench program printed, one per line.</summary>
    public static List<BenchResult> Rows(string output)
    {
        var rows = new List<BenchResult>();
        foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!line.StartsWith('{'))
            {
                continue;
            }

            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            rows.Add(new BenchResult(
                r.GetProperty("scenario").GetString()!, r.GetProperty("metric").GetString()!, r.GetProperty("unit").GetString()!,
                r.GetProperty("value").GetDouble(), r.GetProperty("baseline").GetString()!, r.GetProperty("baseline_value").GetDouble()));
        }

        return rows;
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

        throw new InvalidOperationException($"no SharedStore.sln above {AppContext.BaseDirectory}: run the bench from the repository");
    }
}

/// <summary>ns per object_get + object_put of one block from C, against a process-shared pthread rwlock's read lock
/// and unlock on shared memory in the same program.</summary>
internal sealed class NativeGetPut : IScenario
{
    public string Name => "c-get-put-1block";

    public string Description => "ns per object_get+object_put of one block from C (libsharedstore.so) vs pthread_rwlock_rdlock+unlock (PROCESS_SHARED) in the same program";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        string exe = NativeBench.CompileCBench(context);
        using var broker = new BenchBroker(context);
        long iters = Math.Max(100_000, (long)(5_000_000 * context.Scale));
        string output = NativeBench.Run(exe, ["getput", "bench-c-getput", "9", iters.ToString(CultureInfo.InvariantCulture)],
            new Dictionary<string, string> { ["SHAREDSTORE_SOCKET"] = broker.SocketPath }, TimeSpan.FromMinutes(10));
        return NativeBench.Rows(output);
    }
}

/// <summary>µs for a Python process to get, sum (numpy) and put a 64 MiB object written by another process, against the
/// same array sent through a multiprocessing Pipe and summed.</summary>
internal sealed class PythonGet64MiB : IScenario
{
    public string Name => "py-get-64mib-xproc";

    public string Description => "µs for a Python process to get, numpy-sum and put a 64 MiB object another process wrote vs the same array through a multiprocessing Pipe";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        using var broker = new BenchBroker(context);
        using var client = broker.Connect();
        using var con = client.CreateContainer("bench-py64", SharedStoreClient.ProcessGroupId);
        using var obj = con.CreateObject("big", 64 << 20);
        var env = NativeBench.PythonEnv(broker);
        NativeBench.Run("/usr/bin/python3", [NativeBench.PyBench, "write", "bench-py64"], env, TimeSpan.FromMinutes(2));
        int rounds = Math.Max(4, (int)(12 * context.Scale));
        string output = NativeBench.Run("/usr/bin/python3", [NativeBench.PyBench, "xproc", "bench-py64", rounds.ToString(CultureInfo.InvariantCulture)],
            env, TimeSpan.FromMinutes(10));
        return NativeBench.Rows(output);
    }
}

/// <summary>What loading libsharedstore.so costs a C program: its size (against libcoreclr.so, the runtime a .NET
/// process maps instead), dlopen time, the first call (the NativeAOT runtime starts) and the first container_create
/// (connects to the broker), against spawning /bin/true.</summary>
internal sealed class NativeLibraryCost : IScenario
{
    public string Name => "native-lib";

    public string Description => "libsharedstore.so: size (vs libcoreclr.so), dlopen, first call and first container_create (vs spawning /bin/true)";

    public IReadOnlyList<BenchResult> Run(BenchContext context)
    {
        string exe = NativeBench.CompileCBench(context);
        using var broker = new BenchBroker(context);
        var results = new List<BenchResult>();
        string coreclr = Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "libcoreclr.so");
        results.Add(new BenchResult("native-lib-size", "bytes", "MiB", new FileInfo(NativeBench.Library).Length / (double)(1 << 20),
            "libcoreclr.so", File.Exists(coreclr) ? new FileInfo(coreclr).Length / (double)(1 << 20) : double.NaN));

        // A new process per round, so each load is a first load; the page cache is warm after the first.
        var rounds = new List<List<BenchResult>>();
        for (int i = 0; i < 6; i++)
        {
            rounds.Add(NativeBench.Rows(NativeBench.Run(exe, ["load", NativeBench.Library, $"bench-load-{i}"],
                new Dictionary<string, string> { ["SHAREDSTORE_SOCKET"] = broker.SocketPath }, TimeSpan.FromMinutes(2))));
        }

        foreach (var first in rounds[0])
        {
            var same = rounds.Skip(1).Select(r => r.Single(x => x.Scenario == first.Scenario && x.Metric == first.Metric)).ToList();
            results.Add(first with { Value = Stats.Median(same.Select(x => x.Value)), BaselineValue = Stats.Median(same.Select(x => x.BaselineValue)) });
        }

        return results;
    }
}
