using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace SharedStore.Tests.Harness;

/// <summary>Starting .NET child processes and signalling them: the parts the broker and the client harness share.</summary>
internal static partial class ChildProcess
{
    public const int SigTerm = 15;

    /// <summary>The dotnet host to run the children's dlls with.</summary>
    public static string DotnetHost
    {
        get
        {
            string? fromCli = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
            if (fromCli is not null && File.Exists(fromCli))
            {
                return fromCli;
            }

            string? self = Environment.ProcessPath;
            if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet")
            {
                return self;
            }

            return "dotnet";
        }
    }

    /// <summary>A dll copied beside the test assembly (project references copy the broker and test client here).</summary>
    public static string Dll(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, name);
        if (!File.Exists(path))
        {
            Assert.Fail($"{path} is missing: the test project must reference the project that builds it");
        }

        return path;
    }

    /// <summary>Starts <paramref name="argv"/> with redirected stdio; stderr lines are appended to <paramref name="stderr"/>.</summary>
    public static Process Start(IReadOnlyList<string> argv, StringBuilder stderr, Action<string>? onStdout = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(argv[0])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in argv.Skip(1))
        {
            psi.ArgumentList.Add(a);
        }

        if (env is not null)
        {
            foreach (var kv in env)
            {
                psi.Environment[kv.Key] = kv.Value;
            }
        }

        var p = new Process { StartInfo = psi };
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
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                onStdout?.Invoke(e.Data);
            }
        };
        p.Start();
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        return p;
    }

    /// <summary>Sends a signal; false when the process is already gone.</summary>
    public static bool Signal(Process p, int signal)
    {
        try
        {
            return !p.HasExited && Kill(p.Id, signal) == 0;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>SIGKILL and reap, ignoring a process that is already gone.</summary>
    public static void KillAndWait(Process p)
    {
        try
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
            }

            p.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // never started or already reaped
        }
    }

    public static string Text(StringBuilder sb)
    {
        lock (sb)
        {
            return sb.ToString();
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int sig);
}
