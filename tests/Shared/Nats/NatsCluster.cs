using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace SharedStore.Tests.Nats;

/// <summary>Settings of a <see cref="NatsCluster"/>; the defaults suit the replication tests.</summary>
internal sealed class NatsClusterOptions
{
    /// <summary>Number of nats-server processes (3: the smallest cluster that keeps a replicas=3 stream writable
    /// with one node down).</summary>
    public int Nodes { get; init; } = 3;

    /// <summary>The servers' <c>max_payload</c> in bytes. 8 MiB (<c>8 &lt;&lt; 20</c>): a 1 MiB block plus its
    /// headers exceeds the 1 MB default, and nats-server 2.9 warns above 8 MiB.</summary>
    public int MaxPayloadBytes { get; init; } = 8 << 20;

    /// <summary>JetStream file-store limit per node in bytes (<c>max_file_store</c>); 0 leaves the server's default
    /// (a share of the disk).</summary>
    public long MaxFileStoreBytes { get; init; }

    /// <summary>JetStream memory-store limit per node in bytes (<c>max_memory_store</c>). 256 MiB
    /// (<c>256 &lt;&lt; 20</c>): the default is 75 % of RAM per node, too much to promise three times on a shared
    /// machine.</summary>
    public long MaxMemoryStoreBytes { get; init; } = 256L << 20;

    /// <summary>Parent of the cluster's folder (one sub-folder per node with its config, log and store). Default:
    /// the system temporary folder. The folder is deleted on dispose.</summary>
    public string? ParentDirectory { get; init; }

    /// <summary>Whether every route runs through a relay in this process, so that <see cref="NatsCluster.Partition"/>
    /// can cut one node off (NatsCluster.Partition.cs). Off by default: the relays copy every replicated byte once
    /// more, through the test process.</summary>
    public bool PartitionableRoutes { get; init; }

    /// <summary>How long <see cref="NatsCluster.Start"/>, <see cref="NatsCluster.Restart"/> and
    /// <see cref="NatsCluster.WaitReady"/> wait for a JetStream meta leader that every running node agrees on.</summary>
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// A JetStream cluster of real <c>nats-server</c> processes on loopback, for tests and the bench: each node has its
/// own client, cluster (route) and monitoring port, chosen free at start and kept across restarts, and its own folder
/// holding its config, its log and its JetStream store. <see cref="Start"/> returns once every node reports the same
/// meta leader and is healthy. A node can be killed with SIGKILL (<see cref="Kill"/>), stopped with SIGTERM
/// (<see cref="Stop"/>), frozen with SIGSTOP so that the others see it vanish while its connections stay open
/// (<see cref="Freeze"/>, <see cref="Thaw"/>), cut off from the other nodes while its clients stay connected
/// (<see cref="Partition"/>, <see cref="Heal"/>, with <see cref="NatsClusterOptions.PartitionableRoutes"/>), and
/// started again on the same store (<see cref="Restart"/>).
/// <see cref="Dispose"/> kills every server by pid and deletes the folder; a test that fails still disposes it with
/// <c>using</c>.
/// </summary>
/// <remarks>
/// The cluster does not depend on a NATS client: readiness is read from each node's monitoring endpoints
/// (<c>/jsz</c> for the meta leader, <c>/healthz</c> for "JetStream is current"), so the tests' and the bench's use of
/// NATS.Net is their own. Routes are listed explicitly in each node's config.
/// </remarks>
internal sealed partial class NatsCluster : IDisposable
{
    private const string ClusterName = "sharedstore-test";
    private const string DebianServerPath = "/usr/sbin/nats-server";
    private const int SigKill = 9;
    private const int SigTerm = 15;
    private const int SigCont = 18;
    private const int SigStop = 19;
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(10);

    private readonly NatsClusterOptions _options;
    private readonly Node[] _nodes;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private bool _disposed;

    private NatsCluster(NatsClusterOptions options, string directory, Node[] nodes)
    {
        _options = options;
        Directory = directory;
        _nodes = nodes;
    }

    /// <summary>The cluster's folder (node folders <c>n0</c>, <c>n1</c>, … below it).</summary>
    public string Directory { get; }

    /// <summary>Number of nodes.</summary>
    public int Count => _nodes.Length;

    /// <summary>Every node's client URL, comma-separated: the form NATS clients take for a server list.</summary>
    public string Urls => string.Join(",", _nodes.Select(n => n.ClientUrl));

    /// <summary>The path of the nats-server binary: the first on PATH, else Debian's <c>/usr/sbin/nats-server</c>
    /// (tools/setup.sh installs it; a non-root PATH often lacks /usr/sbin). Never throws: when it is installed nowhere
    /// this is the Debian path, which does not exist (<c>File.Exists(ServerPath)</c> tells), and <see cref="Start"/>
    /// fails with a <see cref="FileNotFoundException"/> naming it.</summary>
    public static string ServerPath
    {
        get
        {
            foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            {
                string candidate = Path.Combine(dir, "nats-server");
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }

            return DebianServerPath;
        }
    }

    /// <summary>Starts the cluster and waits until it has a JetStream meta leader every node agrees on.</summary>
    /// <exception cref="TimeoutException">No agreed leader within <see cref="NatsClusterOptions.ReadyTimeout"/>; the
    /// message holds the tail of each node's log. The servers are killed before it is thrown.</exception>
    /// <exception cref="FileNotFoundException">nats-server is not installed (see <see cref="ServerPath"/>).</exception>
    public static NatsCluster Start(NatsClusterOptions? options = null)
    {
        options ??= new NatsClusterOptions();
        if (!File.Exists(ServerPath))
        {
            throw new FileNotFoundException($"nats-server is not installed (looked on PATH and at {DebianServerPath}; tools/setup.sh installs Debian's package)", DebianServerPath);
        }

        if (options.Nodes < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "a cluster needs at least one node");
        }

        string parent = options.ParentDirectory ?? Path.GetTempPath();
        string dir = Path.Combine(parent, $"ss-nats-{Environment.ProcessId}-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(dir);
        int[] ports = FreePorts(3 * options.Nodes);
        var nodes = new Node[options.Nodes];
        for (int i = 0; i < nodes.Length; i++)
        {
            nodes[i] = new Node(i, Path.Combine(dir, $"n{i}"), ports[3 * i], ports[(3 * i) + 1], ports[(3 * i) + 2]);
        }

        var cluster = new NatsCluster(options, dir, nodes);
        try
        {
            if (options.PartitionableRoutes && nodes.Length > 1)
            {
                cluster.StartRelays();
            }

            foreach (Node n in nodes)
            {
                cluster.WriteConfig(n);
                cluster.Launch(n);
            }

            cluster.WaitReady();
            return cluster;
        }
        catch
        {
            cluster.Dispose();
            throw;
        }
    }

    /// <summary>Node <paramref name="node"/>'s client URL (<c>nats://127.0.0.1:PORT</c>).</summary>
    public string Url(int node) => At(node).ClientUrl;

    /// <summary>Node <paramref name="node"/>'s server name (<c>n0</c>, <c>n1</c>, …), as JetStream reports leaders.</summary>
    public string ServerName(int node) => At(node).Name;

    /// <summary>The index of the node named <paramref name="serverName"/>, or -1.</summary>
    public int IndexOf(string? serverName) => Array.FindIndex(_nodes, n => n.Name == serverName);

    /// <summary>Node <paramref name="node"/>'s folder; its JetStream store is the <c>store</c> folder below it.</summary>
    public string NodeDirectory(int node) => At(node).Directory;

    /// <summary>The pid of node <paramref name="node"/>'s process, or 0 when it is not running.</summary>
    public int Pid(int node) => At(node).Process is { HasExited: false } p ? p.Id : 0;

    /// <summary>Whether node <paramref name="node"/> runs and is not frozen.</summary>
    public bool IsServing(int node) => Pid(node) != 0 && !At(node).Frozen;

    /// <summary>The last <paramref name="lines"/> lines of node <paramref name="node"/>'s log (every run of it).</summary>
    public string LogTail(int node, int lines = 40)
    {
        string path = At(node).LogPath;
        if (!File.Exists(path))
        {
            return "(no log)";
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        string[] all = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return string.Join('\n', all.TakeLast(lines));
    }

    /// <summary>SIGKILL of node <paramref name="node"/> (no shutdown of any kind: its store is as a crash leaves it),
    /// then reaps it.</summary>
    public void Kill(int node) => Terminate(At(node), SigKill);

    /// <summary>SIGTERM of node <paramref name="node"/>: it closes its connections and store and exits; waits until it
    /// has (SIGKILL after 10 s).</summary>
    public void Stop(int node) => Terminate(At(node), SigTerm);

    /// <summary>SIGSTOP of node <paramref name="node"/>: it stops answering but its sockets stay open, so the other
    /// nodes and its clients see a node cut off the network (routes time out after the ping interval), not a closed
    /// connection. <see cref="Thaw"/> heals it.</summary>
    public void Freeze(int node)
    {
        Node n = At(node);
        if (Pid(node) == 0)
        {
            throw new InvalidOperationException($"node {n.Name} is not running");
        }

        Check(SysKill(n.Process!.Id, SigStop), "SIGSTOP");
        n.Frozen = true;
    }

    /// <summary>SIGCONT of a node frozen by <see cref="Freeze"/>. Does not wait for it to rejoin: call
    /// <see cref="WaitReady"/> for that.</summary>
    public void Thaw(int node)
    {
        Node n = At(node);
        if (n.Frozen && Pid(node) != 0)
        {
            Check(SysKill(n.Process!.Id, SigCont), "SIGCONT");
        }

        n.Frozen = false;
    }

    /// <summary>Starts node <paramref name="node"/> again with the same ports and store folder (killing it first if it
    /// still runs), and waits until every running node, this one included, agrees on a meta leader.</summary>
    /// <exception cref="TimeoutException">See <see cref="Start"/>.</exception>
    public void Restart(int node)
    {
        Node n = At(node);
        if (Pid(node) != 0)
        {
            Terminate(n, SigKill);
        }

        Launch(n);
        WaitReady();
    }

    /// <summary>Waits until every serving node (running, not frozen) reports the same JetStream meta leader, the
    /// leader is one of them, and each answers <c>/healthz</c> with OK (its JetStream state is current).</summary>
    /// <exception cref="TimeoutException">Not so within <see cref="NatsClusterOptions.ReadyTimeout"/> (or
    /// <paramref name="timeout"/>); the message says what each node reported and holds the tail of its log.</exception>
    public void WaitReady(TimeSpan? timeout = null)
    {
        var deadline = Stopwatch.StartNew();
        TimeSpan limit = timeout ?? _options.ReadyTimeout;
        string last = "";
        while (true)
        {
            if (Ready(out last))
            {
                return;
            }

            if (deadline.Elapsed > limit)
            {
                var sb = new StringBuilder($"NATS cluster not ready after {limit.TotalSeconds:0} s: {last}");
                foreach (Node n in _nodes)
                {
                    sb.Append(CultureInfo.InvariantCulture, $"\n--- {n.Name} (pid {Pid(n.Index)}) log tail:\n{LogTail(n.Index, 15)}");
                }

                throw new TimeoutException(sb.ToString());
            }

            Thread.Sleep(100);
        }
    }

    /// <summary>The JetStream meta leader's server name as node <paramref name="node"/> reports it (null when it knows
    /// none or does not answer).</summary>
    public string? MetaLeader(int node)
    {
        using JsonDocument? jsz = GetJson(At(node), "/jsz");
        return jsz is not null
            && jsz.RootElement.TryGetProperty("meta_cluster", out JsonElement meta)
            && meta.TryGetProperty("leader", out JsonElement leader)
            && leader.GetString() is { Length: > 0 } name ? name : null;
    }

    /// <summary>GET of a monitoring path (<c>/jsz?streams=true</c>, <c>/routez</c>, …) of node
    /// <paramref name="node"/>; null when it does not answer within 2 s.</summary>
    public string? Monitor(int node, string pathAndQuery)
    {
        try
        {
            return _http.GetStringAsync(new Uri(At(node).MonitorUrl + pathAndQuery)).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return null;
        }
    }

    /// <summary>The number of messages node <paramref name="node"/> itself stores for <paramref name="stream"/> (its
    /// replica's state, from <c>/jsz</c>), or -1 when it has no replica of the stream or does not answer.</summary>
    public long StoredMessages(int node, string stream)
    {
        using JsonDocument? jsz = GetJson(At(node), "/jsz?streams=true");
        if (jsz is null || !jsz.RootElement.TryGetProperty("account_details", out JsonElement accounts) || accounts.ValueKind != JsonValueKind.Array)
        {
            return -1;
        }

        foreach (JsonElement account in accounts.EnumerateArray())
        {
            if (!account.TryGetProperty("stream_detail", out JsonElement streams) || streams.ValueKind != JsonValueKind.Array)
            {
                continue;
            }

            foreach (JsonElement s in streams.EnumerateArray())
            {
                if (s.TryGetProperty("name", out JsonElement name) && name.GetString() == stream
                    && s.TryGetProperty("state", out JsonElement state) && state.TryGetProperty("messages", out JsonElement messages))
                {
                    return messages.GetInt64();
                }
            }
        }

        return -1;
    }

    /// <summary>Kills every server by pid (thawing frozen ones first is not needed: SIGKILL ends a stopped process),
    /// reaps them and deletes the cluster's folder. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (Node n in _nodes)
        {
            Terminate(n, SigKill);
        }

        DisposeRelays();
        _http.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // a file still held open by a process that is gone by now; the temporary folder is cleaned up later
        }
    }

    private static int[] FreePorts(int count)
    {
        // All listeners are held open together, so the ports are distinct; they are closed just before the servers
        // bind them. Another process could take one in between: the cluster would then fail to start, loudly.
        var listeners = new List<TcpListener>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var l = new TcpListener(IPAddress.Loopback, 0);
                l.Start();
                listeners.Add(l);
            }

            return listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        }
        finally
        {
            foreach (TcpListener l in listeners)
            {
                l.Stop();
            }
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"{what} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    private Node At(int node)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(node);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(node, _nodes.Length);
        return _nodes[node];
    }

    private void WriteConfig(Node n)
    {
        System.IO.Directory.CreateDirectory(Path.Combine(n.Directory, "store"));
        string routes = string.Join(", ", _nodes.Where(o => o != n).Select(o => $"\"nats-route://{RouteAddress(n.Index, o.Index)}\""));
        var conf = new StringBuilder();
        conf.AppendLine(CultureInfo.InvariantCulture, $"server_name: \"{n.Name}\"");
        conf.AppendLine(CultureInfo.InvariantCulture, $"listen: \"127.0.0.1:{n.ClientPort}\"");
        conf.AppendLine(CultureInfo.InvariantCulture, $"http: \"127.0.0.1:{n.MonitorPort}\"");
        conf.AppendLine(CultureInfo.InvariantCulture, $"max_payload: {_options.MaxPayloadBytes}");
        conf.AppendLine(CultureInfo.InvariantCulture, $"log_file: \"{n.LogPath}\"");
        conf.AppendLine("jetstream {");
        conf.AppendLine(CultureInfo.InvariantCulture, $"  store_dir: \"{Path.Combine(n.Directory, "store")}\"");
        conf.AppendLine(CultureInfo.InvariantCulture, $"  max_memory_store: {_options.MaxMemoryStoreBytes}");
        if (_options.MaxFileStoreBytes > 0)
        {
            conf.AppendLine(CultureInfo.InvariantCulture, $"  max_file_store: {_options.MaxFileStoreBytes}");
        }

        conf.AppendLine("}");
        if (_nodes.Length > 1)
        {
            conf.AppendLine("cluster {");
            conf.AppendLine(CultureInfo.InvariantCulture, $"  name: \"{ClusterName}\"");
            conf.AppendLine(CultureInfo.InvariantCulture, $"  listen: \"127.0.0.1:{n.ClusterPort}\"");
            conf.AppendLine("  no_advertise: true");
            if (_relays is not null)
            {
                conf.AppendLine("  advertise: \"127.0.0.1:1\""); // gossip-made routes must fail: see NatsCluster.Partition.cs
            }

            conf.AppendLine(CultureInfo.InvariantCulture, $"  routes: [{routes}]");
            conf.AppendLine("}");
        }

        File.WriteAllText(n.ConfigPath, conf.ToString());
    }

    private void Launch(Node n)
    {
        // The server logs to its log_file; its stdout and stderr are drained so that nothing it prints before opening
        // the log (a config error) can block it on a full pipe, and kept for the timeout message.
        var psi = new ProcessStartInfo(ServerPath)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(n.ConfigPath);
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => n.AppendOutput(e.Data);
        p.ErrorDataReceived += (_, e) => n.AppendOutput(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        n.Process = p;
        n.Frozen = false;
    }

    private void Terminate(Node n, int signal)
    {
        Process? p = n.Process;
        if (p is null)
        {
            return;
        }

        try
        {
            if (!p.HasExited)
            {
                _ = SysKill(p.Id, signal);
                if (n.Frozen && signal != SigKill)
                {
                    _ = SysKill(p.Id, SigCont); // a stopped process acts on SIGTERM only once continued
                }

                if (!p.WaitForExit(s_stopTimeout))
                {
                    _ = SysKill(p.Id, SigKill);
                    p.WaitForExit(s_stopTimeout);
                }
            }
        }
        catch (InvalidOperationException)
        {
            // never started or already reaped
        }

        p.Dispose();
        n.Process = null;
        n.Frozen = false;
    }

    private bool Ready(out string report)
    {
        var serving = _nodes.Where(n => IsServing(n.Index)).ToArray();
        var sb = new StringBuilder();
        string? agreed = null;
        bool ok = serving.Length > 0;
        foreach (Node n in serving)
        {
            string? leader = MetaLeader(n.Index);
            bool healthy = Monitor(n.Index, "/healthz") is { } h && h.Contains("\"ok\"", StringComparison.Ordinal);
            sb.Append(CultureInfo.InvariantCulture, $"{n.Name}: leader={leader ?? "none"} healthz={(healthy ? "ok" : "not ok")}; ");
            agreed ??= leader;
            ok &= leader is not null && leader == agreed && healthy;
        }

        ok &= agreed is not null && serving.Any(n => n.Name == agreed);
        foreach (Node n in _nodes.Where(n => n.Process is { HasExited: true }))
        {
            sb.Append(CultureInfo.InvariantCulture, $"{n.Name} exited with {n.Process!.ExitCode}: {n.Output}; ");
            ok = false;
        }

        report = sb.ToString();
        return ok;
    }

    private JsonDocument? GetJson(Node n, string pathAndQuery)
    {
        string? body = Monitor(n.Index, pathAndQuery);
        if (body is null)
        {
            return null;
        }

        try
        {
            return JsonDocument.Parse(body);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int sig);

    private sealed class Node(int index, string directory, int clientPort, int clusterPort, int monitorPort)
    {
        private readonly StringBuilder _output = new();

        public int Index { get; } = index;

        public string Name { get; } = $"n{index}";

        public string Directory { get; } = directory;

        public int ClientPort { get; } = clientPort;

        public int ClusterPort { get; } = clusterPort;

        public int MonitorPort { get; } = monitorPort;

        public string ClientUrl => $"nats://127.0.0.1:{ClientPort}";

        public string MonitorUrl => $"http://127.0.0.1:{MonitorPort}";

        public string ConfigPath => Path.Combine(Directory, "nats.conf");

        public string LogPath => Path.Combine(Directory, "nats.log");

        public Process? Process { get; set; }

        public bool Frozen { get; set; }

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public void AppendOutput(string? line)
        {
            if (line is not null)
            {
                lock (_output)
                {
                    _output.AppendLine(line);
                }
            }
        }
    }
}
