using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;

namespace SharedStore.Native.Tests;

/// <summary>A child process whose stdout lines are collected (and can be awaited one by one) and whose stderr is kept.</summary>
internal sealed class Child : IDisposable
{
    private readonly StringBuilder _log = new();
    private readonly BlockingCollection<string> _lines = [];

    public Child(IReadOnlyList<string> argv, IDictionary<string, string> env)
    {
        Process = ChildProcess.Start(argv, _log, line =>
        {
            lock (_log)
            {
                _log.AppendLine(line);
            }

            _lines.Add(line);
        }, env);
    }

    public Process Process { get; }

    /// <summary>stdout and stderr, interleaved as they arrived.</summary>
    public string Log => ChildProcess.Text(_log);

    /// <summary>Waits for the next stdout line; fails the test after <paramref name="timeout"/>.</summary>
    public string NextLine(TimeSpan timeout)
    {
        if (!_lines.TryTake(out string? line, timeout))
        {
            Assert.Fail($"pid {Process.Id} printed nothing within {timeout}; output so far:\n{Log}");
        }

        return line!;
    }

    /// <summary>Waits for the exit and returns the code; fails the test after <paramref name="timeout"/>.</summary>
    public int Exit(TimeSpan timeout)
    {
        if (!Process.WaitForExit(timeout))
        {
            Assert.Fail($"pid {Process.Id} did not exit within {timeout}; output:\n{Log}");
        }

        Process.WaitForExit();
        return Process.ExitCode;
    }

    public void Dispose()
    {
        ChildProcess.KillAndWait(Process);
        Process.Dispose();
    }
}
