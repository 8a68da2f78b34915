using System.Diagnostics;
using System.Text;

namespace SharedStore.Cli.Tests.Harness;

/// <summary>What one run of the sharedstore command printed and returned.</summary>
internal sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>Runs <c>dotnet sharedstore.dll --socket SOCKET ARGS…</c> as a child process, with a timeout.</summary>
internal static class CliRunner
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(60);

    public static CliResult Run(string socket, params string[] args)
    {
        var argv = new List<string> { ChildProcess.Dll("sharedstore.dll"), "--socket", socket };
        argv.AddRange(args);
        return RunRaw(argv);
    }

    public static CliResult RunRaw(IReadOnlyList<string> argv)
    {
        var psi = new ProcessStartInfo(ChildProcess.DotnetHost)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in argv)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove(BrokerEndpoint.EnvironmentVariable);
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stdout)
                {
                    stdout.AppendLine(e.Data);
                }
            }
        };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stderr)
                {
                    stderr.AppendLine(e.Data);
                }
            }
        };
        var sw = Stopwatch.StartNew();
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(s_timeout))
        {
            ChildProcess.KillAndWait(p);
            Assert.Fail($"sharedstore {string.Join(' ', argv.Skip(1))} did not exit within {s_timeout}; stderr:\n{ChildProcess.Text(stderr)}");
        }

        p.WaitForExit();
        var r = new CliResult(p.ExitCode, ChildProcess.Text(stdout), ChildProcess.Text(stderr));
        TestContext.Progress.WriteLine($"  $ sharedstore {string.Join(' ', argv.Skip(1))} -> {r.ExitCode} ({sw.ElapsedMilliseconds} ms)");
        return r;
    }
}
