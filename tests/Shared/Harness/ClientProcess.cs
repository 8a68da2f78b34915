using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace SharedStore.Tests.Harness;

/// <summary>
/// A real <c>SharedStore.TestClient</c> child process, optionally run as the user nobody (uid/gid 65534, no
/// supplementary groups) through setpriv. <see cref="Send"/> writes one command and returns its sequence number;
/// <see cref="Expect"/> waits for that command's answer line.
/// </summary>
internal sealed class ClientProcess : IDisposable
{
    public const int NobodyId = 65534;

    /// <summary>'Should happen' waits.</summary>
    public static readonly TimeSpan Soon = TimeSpan.FromSeconds(30);

    /// <summary>'Must not happen yet' checks.</summary>
    public static readonly TimeSpan NotYetWindow = TimeSpan.FromMilliseconds(400);

    private readonly StringBuilder _stderr = new();
    private readonly Dictionary<int, string> _answers = [];
    private readonly Process _process;
    private readonly string _name;
    private int _seq;

    private ClientProcess(string name, bool asNobody)
    {
        _name = name;
        var argv = new List<string>();
        Dictionary<string, string>? env = null;
        if (asNobody)
        {
            argv.AddRange(["setpriv", $"--reuid={NobodyId}", $"--regid={NobodyId}", "--clear-groups"]);
            env = new Dictionary<string, string>(StringComparer.Ordinal) { ["DOTNET_CLI_HOME"] = "/tmp", ["HOME"] = "/tmp" };
        }

        argv.AddRange([ChildProcess.DotnetHost, ChildProcess.Dll("SharedStore.TestClient.dll")]);
        _process = ChildProcess.Start(argv, _stderr, OnLine, env);
    }

    public int Pid => _process.Id;

    public string Stderr => ChildProcess.Text(_stderr);

    /// <summary>Starts a client process.</summary>
    public static ClientProcess Start(string name, bool asNobody = false) => new(name, asNobody);

    /// <summary>Whether this machine can run a client as another user (root and setpriv).</summary>
    public static bool CanRunAsNobody(out string why)
    {
        if (Environment.UserName != "root" && Interop.GetUid() != 0)
        {
            why = "the tests do not run as root";
            return false;
        }

        if (!File.Exists("/usr/bin/setpriv") && !File.Exists("/bin/setpriv"))
        {
            why = "setpriv is not installed";
            return false;
        }

        why = "";
        return true;
    }

    /// <summary>Writes one command; returns its sequence number.</summary>
    public int Send(string command)
    {
        TestContext.Progress.WriteLine($"  [{_name}] {_seq + 1}> {(command.Length > 120 ? command[..120] + "…" : command)}");
        _process.StandardInput.WriteLine(command);
        _process.StandardInput.Flush();
        return ++_seq;
    }

    /// <summary>Waits for the answer of command <paramref name="seq"/> ("ok …" or "err CODE …", without the number).</summary>
    public string Expect(int seq, TimeSpan? timeout = null)
    {
        TimeSpan t = timeout ?? Soon;
        var sw = Stopwatch.StartNew();
        lock (_answers)
        {
            while (!_answers.ContainsKey(seq))
            {
                TimeSpan left = t - sw.Elapsed;
                if (left <= TimeSpan.Zero || (_process.HasExited && !_answers.ContainsKey(seq)))
                {
                    if (left > TimeSpan.Zero)
                    {
                        Monitor.Wait(_answers, 200); // let the last lines of an exited client arrive
                        if (_answers.ContainsKey(seq))
                        {
                            break;
                        }
                    }

                    Assert.Fail($"[{_name}] no answer to command {seq} within {t} (exited: {_process.HasExited}); answers: {string.Join(" | ", _answers.Select(kv => $"{kv.Key} {kv.Value}"))}; stderr:\n{Stderr}");
                }

                Monitor.Wait(_answers, left < TimeSpan.FromMilliseconds(100) ? left : TimeSpan.FromMilliseconds(100));
            }

            string a = _answers[seq];
            TestContext.Progress.WriteLine($"  [{_name}] {seq}< {a} ({sw.ElapsedMilliseconds} ms)");
            return a;
        }
    }

    /// <summary>Waits for an answer that must be "ok"; returns its values.</summary>
    public string[] ExpectOk(int seq, TimeSpan? timeout = null)
    {
        string a = Expect(seq, timeout);
        Assert.That(a, Does.StartWith("ok"), $"[{_name}] command {seq} failed; stderr:\n{Stderr}");
        return a.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray();
    }

    /// <summary>Waits for an answer that must be "err CODE"; returns the whole line.</summary>
    public string ExpectErr(int seq, string code, TimeSpan? timeout = null)
    {
        string a = Expect(seq, timeout);
        Assert.That(a, Does.StartWith($"err {code} ").Or.EqualTo($"err {code}"), $"[{_name}] command {seq}");
        return a;
    }

    /// <summary>Send and ExpectOk.</summary>
    public string[] Ok(string command, TimeSpan? timeout = null) => ExpectOk(Send(command), timeout);

    /// <summary>Send and ExpectErr.</summary>
    public string Err(string command, string code, TimeSpan? timeout = null) => ExpectErr(Send(command), code, timeout);

    /// <summary>Asserts that command <paramref name="seq"/> is still unanswered after <paramref name="window"/>.</summary>
    public void ExpectNoAnswerYet(int seq, TimeSpan? window = null, string because = "")
    {
        TimeSpan w = window ?? NotYetWindow;
        var sw = Stopwatch.StartNew();
        lock (_answers)
        {
            while (sw.Elapsed < w)
            {
                if (_answers.TryGetValue(seq, out string? a))
                {
                    Assert.Fail($"[{_name}] command {seq} answered '{a}' after {sw.ElapsedMilliseconds} ms, but must not complete yet: {because}");
                }

                TimeSpan left = w - sw.Elapsed;
                if (left > TimeSpan.Zero)
                {
                    Monitor.Wait(_answers, left);
                }
            }

            Assert.That(_answers.ContainsKey(seq), Is.False, $"[{_name}] command {seq} must not complete yet: {because}");
        }
    }

    /// <summary>The value of a "key=value" field of an answer.</summary>
    public static string Field(string[] values, string key)
    {
        string? v = values.FirstOrDefault(x => x.StartsWith(key + "=", StringComparison.Ordinal));
        Assert.That(v, Is.Not.Null, $"no {key}= in '{string.Join(' ', values)}'");
        return v![(key.Length + 1)..];
    }

    public static long Number(string s) => long.Parse(s, CultureInfo.InvariantCulture);

    /// <summary>SIGKILL.</summary>
    public void Kill() => ChildProcess.KillAndWait(_process);

    public void Dispose()
    {
        ChildProcess.KillAndWait(_process);
        _process.Dispose();
    }

    private void OnLine(string line)
    {
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        if (space <= 0 || !int.TryParse(line.AsSpan(0, space), NumberStyles.None, CultureInfo.InvariantCulture, out int seq))
        {
            lock (_stderr)
            {
                _stderr.AppendLine($"(stdout) {line}");
            }

            return;
        }

        lock (_answers)
        {
            _answers[seq] = line[(space + 1)..];
            Monitor.PulseAll(_answers);
        }
    }
}
