using System.Diagnostics.Tracing;
using System.Globalization;
using System.Text;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing.Etlx;
using Microsoft.Diagnostics.Tracing.Parsers;

namespace SharedStore.Diagnostics;

/// <summary>
/// The managed stack of every thread of a running .NET process, read from outside it the way dotnet-stack does: a
/// short EventPipe session with the runtime's sample profiler (one sample of every managed thread each millisecond) and
/// the rundown of method names at its end, parsed with TraceEvent. The target needs no preparation (its diagnostic
/// server is on by default) and keeps running; a process hung in a futex wait still answers, because the runtime's
/// diagnostic server thread serves the session. Works on this process too.
/// </summary>
public static class ManagedStacks
{
    private const string SampleProfiler = "Microsoft-DotNETCore-SampleProfiler";

    /// <summary>Each thread's most recent managed stack (innermost frame first) as text, or a line that says why it
    /// could not be read (not a .NET process, already gone, no permission). Never throws for such reasons.</summary>
    public static string Capture(int pid, TimeSpan? sampleFor = null)
    {
        string trace = Path.Combine(Path.GetTempPath(), $"sharedstore-stacks-{pid}-{Guid.NewGuid():N}.nettrace");
        string etlx = Path.ChangeExtension(trace, ".etlx");
        try
        {
            var client = new DiagnosticsClient(pid);
            EventPipeProvider[] providers =
            [
                new(SampleProfiler, EventLevel.Informational),
                new("Microsoft-Windows-DotNETRuntime", EventLevel.Informational, (long)ClrTraceEventParser.Keywords.Default),
            ];
            using (var session = client.StartEventPipeSession(providers, requestRundown: true))
            using (var file = File.Create(trace))
            {
                var copy = session.EventStream.CopyToAsync(file);
                Thread.Sleep(sampleFor ?? TimeSpan.FromMilliseconds(200));
                session.Stop();
                if (!copy.Wait(TimeSpan.FromSeconds(30)))
                {
                    return $"pid {pid}: the EventPipe session did not end within 30 s";
                }
            }

            TraceLog.CreateFromEventPipeDataFile(trace, etlx);
            using var log = new TraceLog(etlx);
            return Format(pid, log);
        }
        catch (Exception e) when (e is ServerNotAvailableException or UnsupportedCommandException or IOException or UnauthorizedAccessException
            or TimeoutException or InvalidOperationException or AggregateException or EndOfStreamException or FormatException)
        {
            return $"pid {pid}: managed stacks unavailable: {e.GetType().Name}: {e.Message}";
        }
        finally
        {
            TryDelete(trace);
            TryDelete(etlx);
        }
    }

    private static string Format(int pid, TraceLog log)
    {
        // The last sample of each thread: its stack as it was when the session stopped.
        var last = new Dictionary<int, TraceCallStack?>();
        foreach (var e in log.Events)
        {
            if (e.ProviderName == SampleProfiler && e.CallStackIndex() != CallStackIndex.Invalid)
            {
                last[e.ThreadID] = e.CallStack();
            }
        }

        var names = ThreadNames(pid);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"pid {pid} ({ProcessName(pid)}): {last.Count} managed thread(s)").AppendLine();
        foreach (var (tid, stack) in last.OrderBy(kv => kv.Key))
        {
            sb.Append(CultureInfo.InvariantCulture, $"  thread {tid}{(names.TryGetValue(tid, out string? n) ? $" \"{n}\"" : "")}").AppendLine();
            int depth = 0;
            for (var f = stack; f is not null && depth < 64; f = f.Caller, depth++)
            {
                string method = f.CodeAddress.FullMethodName;
                if (string.IsNullOrEmpty(method))
                {
                    method = $"?? ({f.CodeAddress.ModuleName}!0x{f.CodeAddress.Address:X})";
                }

                sb.Append("    at ").Append(method).AppendLine();
            }
        }

        return sb.ToString();
    }

    private static Dictionary<int, string> ThreadNames(int pid)
    {
        var d = new Dictionary<int, string>();
        try
        {
            foreach (string dir in Directory.GetDirectories($"/proc/{pid}/task"))
            {
                if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int tid))
                {
                    try
                    {
                        d[tid] = File.ReadAllText(Path.Combine(dir, "comm")).TrimEnd('\n');
                    }
                    catch (IOException)
                    {
                        // the thread ended meanwhile
                    }
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // the process ended meanwhile
        }

        return d;
    }

    internal static string ProcessName(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "?";
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}
