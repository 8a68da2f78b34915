using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace SharedStore.Bench.Devices;

/// <summary>Runs fio as the baseline. fio is a Debian package; when it is missing this installs it with apt-get
/// (one `apt-get update` per process) and fails with the apt output when that does not work.</summary>
internal static class Fio
{
    private static readonly object s_installLock = new();
    private static bool s_checked;

    public static void EnsureInstalled(TextWriter log)
    {
        lock (s_installLock)
        {
            if (s_checked)
            {
                return;
            }

            if (!IsOnPath())
            {
                log.WriteLine("fio not found; installing it with apt-get");
                (int rc, string output) = RunProcess("apt-get", ["update"], TimeSpan.FromMinutes(3));
                if (rc != 0)
                {
                    throw new InvalidOperationException($"apt-get update failed ({rc}); cannot install fio:\n{output}");
                }

                (rc, output) = RunProcess("apt-get", ["install", "-y", "fio"], TimeSpan.FromMinutes(5),
                    ("DEBIAN_FRONTEND", "noninteractive"));
                if (rc != 0 || !IsOnPath())
                {
                    throw new InvalidOperationException($"apt-get install -y fio failed ({rc}); the fio baseline cannot run:\n{output}");
                }
            }

            s_checked = true;
        }
    }

    /// <summary>Runs fio with JSON output and returns the first job's group ("jobs[0]", aggregated with
    /// --group_reporting).</summary>
    public static JsonElement RunJob(IReadOnlyList<string> args, TextWriter log, TimeSpan timeout)
    {
        var all = new List<string>(args) { "--output-format=json", "--group_reporting" };
        log.WriteLine("fio " + string.Join(' ', all));
        (int rc, string output) = RunProcess("fio", all, timeout);
        if (rc != 0)
        {
            throw new InvalidOperationException($"fio exited with {rc}:\n{output}");
        }

        // fio may print warnings before the JSON document.
        int start = output.IndexOf('{', StringComparison.Ordinal);
        using JsonDocument doc = JsonDocument.Parse(output[start..]);
        return doc.RootElement.GetProperty("jobs")[0].Clone();
    }

    public static double ReadIops(JsonElement job) => job.GetProperty("read").GetProperty("iops").GetDouble();

    public static double WriteMBps(JsonElement job) =>
        job.GetProperty("write").GetProperty("bw_bytes").GetDouble() / 1e6;

    public static string Arg(string name, object value) =>
        $"--{name}={Convert.ToString(value, CultureInfo.InvariantCulture)}";

    /// <summary>fio's own CPU per I/O in microseconds ((usr + sys) of its job over its I/Os), for the log.</summary>
    public static double CpuMicrosPerIo(JsonElement job, string direction)
    {
        double ios = job.GetProperty(direction).GetProperty("total_ios").GetDouble();
        double busy = (job.GetProperty("usr_cpu").GetDouble() + job.GetProperty("sys_cpu").GetDouble()) / 100;
        return ios == 0 ? 0 : busy * job.GetProperty("elapsed").GetDouble() * 1e6 / ios;
    }

    private static bool IsOnPath() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(d => File.Exists(Path.Combine(d, "fio")));

    private static (int ExitCode, string Output) RunProcess(string file, IEnumerable<string> args, TimeSpan timeout,
        params (string Name, string Value)[] env)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach ((string name, string value) in env)
        {
            psi.Environment[name] = value;
        }

        using Process p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} did not finish within {timeout}");
        }

        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
