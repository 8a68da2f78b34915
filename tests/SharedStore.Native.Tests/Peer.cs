using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace SharedStore.Native.Tests;

/// <summary>The C test program in its peer role (<c>seedcalls peer</c>): a C process of the library driven one command
/// per line, answering <c>rc N</c> (the C call's return value).</summary>
internal sealed class Peer : IDisposable
{
    private static readonly TimeSpan s_answer = TimeSpan.FromSeconds(30);
    private readonly StringBuilder _stderr = new();
    private readonly BlockingCollection<string> _answers = [];
    private readonly Process _process;

    public Peer(string socketPath)
    {
        var env = new Dictionary<string, string> { ["SHAREDSTORE_SOCKET"] = socketPath };
        _process = ChildProcess.Start([NativeLibrary.Program("seedcalls"), "peer"], _stderr, _answers.Add, env);
    }

    public Process Process => _process;

    /// <summary>Sends one command and returns the C call's return value.</summary>
    public int Do(string command)
    {
        _process.StandardInput.WriteLine(command);
        _process.StandardInput.Flush();
        if (!_answers.TryTake(out string? line, s_answer))
        {
            Assert.Fail($"the C peer did not answer '{command}' within {s_answer}; stderr:\n{ChildProcess.Text(_stderr)}");
        }

        Assert.That(line, Does.StartWith("rc "), $"peer answered '{line}' to '{command}'");
        return int.Parse(line![3..], CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        ChildProcess.KillAndWait(_process);
        _process.Dispose();
    }
}
