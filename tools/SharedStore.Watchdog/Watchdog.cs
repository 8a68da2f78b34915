using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace SharedStore.Diagnostics;

/// <summary>
/// A budget for one piece of work that drives other processes (a bench scenario, a cross-process test). If the work
/// is still running when the budget is spent, the watchdog writes the stacks of every process involved — this process
/// and all its descendants (managed stacks through EventPipe for .NET processes, native ones through gdb where it is
/// installed for the others) — and hands the report to <c>onExpired</c>, which fails the work in its own way. Dispose
/// it when the work ends.
/// </summary>
public sealed class Watchdog : IDisposable
{
    private readonly string _name;
    private readonly TimeSpan _budget;
    private readonly Action<string> _onExpired;
    private readonly Timer _timer;
    private readonly ManualResetEventSlim _reported = new();
    private string? _report;
    private int _state; // 0 armed, 1 fired, 2 disposed

    private Watchdog(string name, TimeSpan budget, Action<string> onExpired)
    {
        _name = name;
        _budget = budget;
        _onExpired = onExpired;
        _timer = new Timer(_ => Fire(), null, budget, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Arms a watchdog for the work called <paramref name="name"/>.</summary>
    public static Watchdog Start(string name, TimeSpan budget, Action<string> onExpired) => new(name, budget, onExpired);

    /// <summary>Whether the budget ran out.</summary>
    public bool Fired => Volatile.Read(ref _state) == 1;

    /// <summary>The report header that names the work and its budget.</summary>
    public string Headline => string.Create(CultureInfo.InvariantCulture, $"watchdog: '{_name}' exceeded its budget of {_budget.TotalSeconds:0.#} s");

    /// <summary>The report of a watchdog that fired (the stacks take a few seconds to collect): null if it did not fire,
    /// or if the report is not ready within <paramref name="timeout"/>.</summary>
    public string? WaitForReport(TimeSpan timeout) => Fired && _reported.Wait(timeout) ? _report : null;

    public void Dispose()
    {
        Interlocked.CompareExchange(ref _state, 2, 0);
        _timer.Dispose();
    }

    private void Fire()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            return;
        }

        string report;
        try
        {
            report = Headline + Environment.NewLine + StacksOfTree(Environment.ProcessId);
        }
        catch (Exception e)
        {
            report = Headline + $" (the stacks could not be written: {e})";
        }

        _report = report;
        _reported.Set();
        _onExpired(report);
    }

    /// <summary>The stacks of <paramref name="root"/> and of every process it started.</summary>
    public static string StacksOfTree(int root)
    {
        var sb = new StringBuilder();
        foreach (int pid in new[] { root }.Concat(ProcessTree.Descendants(root)))
        {
            sb.AppendLine(Stacks(pid));
        }

        return sb.ToString();
    }

    /// <summary>One process's stacks: managed ones for a .NET process, native ones (gdb) otherwise.</summary>
    public static string Stacks(int pid) =>
        ProcessTree.IsDotnet(pid) ? ManagedStacks.Capture(pid) : NativeStacks(pid);

    /// <summary>Kills every descendant of this process (SIGKILL), children first in no particular order; used after
    /// the stacks were written, so that work blocked on a child's output or exit comes back and fails.</summary>
    public static void KillDescendants()
    {
        foreach (int pid in ProcessTree.Descendants(Environment.ProcessId))
        {
            try
            {
                using var p = Process.GetProcessById(pid);
                p.Kill();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // gone already
            }
        }
    }

    private static string NativeStacks(int pid)
    {
        string name = ManagedStacks.ProcessName(pid);
        string? gdb = new[] { "/usr/bin/gdb", "/usr/local/bin/gdb" }.FirstOrDefault(File.Exists);
        if (gdb is null)
        {
            return $"pid {pid} ({name}): not a .NET process, and gdb is not installed for its native stacks";
        }

        try
        {
            var psi = new ProcessStartInfo(gdb) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in new[] { "-p", pid.ToString(CultureInfo.InvariantCulture), "-batch", "-nx", "-ex", "thread apply all bt 30" })
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEndAsync();
            if (!p.WaitForExit(30_000))
            {
                p.Kill();
                return $"pid {pid} ({name}): gdb did not finish within 30 s";
            }

            return $"pid {pid} ({name}): native stacks (gdb)" + Environment.NewLine + output.Result;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return $"pid {pid} ({name}): gdb failed: {e.Message}";
        }
    }
}
