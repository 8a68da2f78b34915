namespace SharedStore.Broker;

/// <summary>
/// Open connections per Unix user, bounded by <see cref="BrokerOptions.MaxConnectionsPerUid"/>. The accept loop asks
/// before it spends a thread or any memory on a connection, so a flood from one user (10 000 connections of `nobody`)
/// costs at most that many sessions, and others still connect. Its lock guards only its counters.
/// </summary>
internal sealed class ConnectionLimiter(int maxPerUid)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<uint, int> _open = [];
    private long _refusedSinceReport;
    private long _lastReport;

    public int MaxPerUid { get; } = maxPerUid;

    /// <summary>Counts a new connection of <paramref name="uid"/>; false (nothing counted) when it has its maximum.</summary>
    public bool TryEnter(uint uid)
    {
        lock (_gate)
        {
            int n = _open.GetValueOrDefault(uid);
            if (n >= MaxPerUid)
            {
                _refusedSinceReport++;
                return false;
            }

            _open[uid] = n + 1;
            return true;
        }
    }

    public void Leave(uint uid)
    {
        lock (_gate)
        {
            int n = _open.GetValueOrDefault(uid) - 1;
            if (n > 0)
            {
                _open[uid] = n;
            }
            else
            {
                _open.Remove(uid);
            }
        }
    }

    /// <summary>Refusals since the last report, at most one report a second (a flood must not flood the log too);
    /// 0 when it is not time to report.</summary>
    public long TakeRefusalsToReport()
    {
        lock (_gate)
        {
            long now = Environment.TickCount64;
            if (_refusedSinceReport == 0 || now - _lastReport < 1000)
            {
                return 0;
            }

            _lastReport = now;
            long n = _refusedSinceReport;
            _refusedSinceReport = 0;
            return n;
        }
    }
}
