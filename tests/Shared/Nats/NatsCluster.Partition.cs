using System.Net;
using System.Net.Sockets;

namespace SharedStore.Tests.Nats;

/// <summary>
/// Network partitions of one node: with <see cref="NatsClusterOptions.PartitionableRoutes"/>, every route between two
/// nodes runs through a TCP relay in this process, one relay per ordered pair (node i's route to node j dials relay
/// i→j, which connects to j's cluster port). <see cref="Partition"/> closes every route connection of a node and
/// refuses new ones, while its client port stays reachable: the node's clients stay connected to a server that has
/// lost the rest of the cluster, as a broker on a cut-off host would. <see cref="Heal"/> lets the routes through
/// again; the nodes redial their configured routes by themselves (every second).
/// </summary>
/// <remarks>
/// Why every route goes through a relay: a server that learns of another through gossip dials that server's advertised
/// cluster address, which would bypass the relays and survive a partition. So each node advertises
/// <c>127.0.0.1:1</c>, where nothing listens: gossip-made routes fail at once and the only routes are the configured
/// ones, through the relays. The cut closes connections (the peers see a reset, as with a host that is unreachable and
/// says so) instead of dropping bytes silently, which nats-server would only notice after its two-minute ping
/// interval; the RAFT groups react to either within their election timeouts.
/// </remarks>
internal sealed partial class NatsCluster
{
    private RouteRelay[,]? _relays;

    /// <summary>Whether node <paramref name="node"/> is cut off by <see cref="Partition"/>.</summary>
    public bool IsPartitioned(int node)
    {
        _ = At(node);
        return _relays is not null && _relays[node, (node + 1) % Count].IsCut;
    }

    /// <summary>The number of route connections open through the relays right now (0 without
    /// <see cref="NatsClusterOptions.PartitionableRoutes"/>). A formed cluster of n nodes has n(n-1)/2, one per pair,
    /// once duplicate routes (both sides dialled) are closed.</summary>
    public int RelayedRoutes
    {
        get
        {
            int total = 0;
            foreach (RouteRelay relay in _relays ?? new RouteRelay[0, 0])
            {
                total += relay?.OpenConnections ?? 0;
            }

            return total;
        }
    }

    /// <summary>Cuts node <paramref name="node"/> off from every other node: closes its route connections both ways
    /// and refuses new ones until <see cref="Heal"/>. Its clients stay connected to it.</summary>
    /// <exception cref="InvalidOperationException">The cluster was started without
    /// <see cref="NatsClusterOptions.PartitionableRoutes"/>.</exception>
    public void Partition(int node) => SetCut(node, cut: true);

    /// <summary>Ends the partition of node <paramref name="node"/>. Does not wait for the routes to form again: call
    /// <see cref="WaitReady"/> for that.</summary>
    /// <exception cref="InvalidOperationException">See <see cref="Partition"/>.</exception>
    public void Heal(int node) => SetCut(node, cut: false);

    private void SetCut(int node, bool cut)
    {
        _ = At(node);
        if (_relays is null)
        {
            throw new InvalidOperationException("the cluster was started without NatsClusterOptions.PartitionableRoutes");
        }

        for (int other = 0; other < Count; other++)
        {
            if (other != node)
            {
                _relays[node, other].SetCut(cut);
                _relays[other, node].SetCut(cut);
            }
        }
    }

    private void StartRelays()
    {
        _relays = new RouteRelay[Count, Count];
        for (int from = 0; from < Count; from++)
        {
            for (int to = 0; to < Count; to++)
            {
                if (from != to)
                {
                    _relays[from, to] = new RouteRelay(_nodes[to].ClusterPort);
                }
            }
        }
    }

    private string RouteAddress(int from, int to) =>
        _relays is null ? $"127.0.0.1:{_nodes[to].ClusterPort}" : $"127.0.0.1:{_relays[from, to].Port}";

    private void DisposeRelays()
    {
        foreach (RouteRelay relay in _relays ?? new RouteRelay[0, 0])
        {
            relay?.Dispose();
        }
    }

    /// <summary>One direction of one pair: accepts on its own loopback port, connects each accepted connection to the
    /// target node's cluster port and copies bytes both ways until either side closes, or until a cut closes both.
    /// Its lock guards the set of open connections and the cut flag together, so that a connection accepted while a
    /// cut happens is either closed by the cut or refused, never left open.</summary>
    private sealed class RouteRelay : IDisposable
    {
        private readonly int _targetPort;
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly HashSet<Socket> _open = [];
        private readonly Lock _lock = new();
        private readonly CancellationTokenSource _stop = new();
        private bool _cut;

        public RouteRelay(int targetPort)
        {
            _targetPort = targetPort;
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(16);
            Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
            _ = AcceptLoop();
        }

        public int Port { get; }

        public bool IsCut
        {
            get
            {
                lock (_lock)
                {
                    return _cut;
                }
            }
        }

        /// <summary>Open relayed connections: accepted sockets whose pair is still copying.</summary>
        public int OpenConnections
        {
            get
            {
                lock (_lock)
                {
                    return _open.Count / 2;
                }
            }
        }

        public void SetCut(bool cut)
        {
            Socket[] toClose;
            lock (_lock)
            {
                _cut = cut;
                toClose = cut ? [.. _open] : [];
                if (cut)
                {
                    _open.Clear();
                }
            }

            foreach (Socket s in toClose)
            {
                Close(s);
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Dispose();
            SetCut(true);
            _stop.Dispose();
        }

        private static void Close(Socket s)
        {
            try
            {
                // Linger 0: the peer gets a reset at once rather than a FIN after the unsent bytes.
                s.LingerState = new LingerOption(true, 0);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // already closed
            }

            s.Dispose();
        }

        private async Task AcceptLoop()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket inbound;
                try
                {
                    inbound = await _listener.AcceptAsync(_stop.Token);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
                {
                    return;
                }

                _ = Relay(inbound);
            }
        }

        private async Task Relay(Socket inbound)
        {
            var outbound = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await outbound.ConnectAsync(new IPEndPoint(IPAddress.Loopback, _targetPort), _stop.Token);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
            {
                Close(inbound);
                Close(outbound);
                return;
            }

            bool admitted;
            lock (_lock)
            {
                // Under the lock with the flag: a cut after this point finds the pair in _open and closes it.
                admitted = !_cut;
                if (admitted)
                {
                    _open.Add(inbound);
                    _open.Add(outbound);
                }
            }

            if (!admitted)
            {
                Close(inbound);
                Close(outbound);
                return;
            }

            await Task.WhenAll(Copy(inbound, outbound), Copy(outbound, inbound));
            lock (_lock)
            {
                _open.Remove(inbound);
                _open.Remove(outbound);
            }

            inbound.Dispose();
            outbound.Dispose();
        }

        private static async Task Copy(Socket from, Socket to)
        {
            byte[] buffer = new byte[64 << 10]; // 64 KiB
            try
            {
                while (true)
                {
                    int n = await from.ReceiveAsync(buffer, SocketFlags.None);
                    if (n == 0)
                    {
                        break;
                    }

                    int sent = 0;
                    while (sent < n)
                    {
                        sent += await to.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None);
                    }
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // the other side or a cut closed it
            }

            // Either direction ending ends the pair: a route is one conversation.
            Close(from);
            Close(to);
        }
    }
}
