using System.Globalization;

namespace SharedStore.Broker;

/// <summary>
/// Every byte of shared memory the broker hands out, counted against <c>--memory-limit</c> and, per Unix user, against
/// <c>--uid-memory-quota</c>: object data (whole pages), lock tables of segments, and asynchronous channels (ring,
/// status entries and staging). A charge is refused with <see cref="ErrorCode.NoResources"/> before the memory is
/// made, so a hog meets a clean error and nothing is left half made. Each charge names the uid it is charged to and
/// is released to that uid. Thread-safe; its lock guards only its counters and nests inside the model lock (a leaf: see LockOrder).
/// </summary>
internal sealed class MemoryBudget
{
    private readonly Lock _gate = new();
    private readonly Dictionary<uint, long> _byUid = [];
    private long _inUse;

    public MemoryBudget(long limit, long uidQuota)
    {
        Limit = limit;
        UidQuota = uidQuota;
    }

    /// <summary>Most bytes in use at once (<c>--memory-limit</c>).</summary>
    public long Limit { get; }

    /// <summary>Most bytes one uid may have in use at once; 0 = no quota (<c>--uid-memory-quota</c>).</summary>
    public long UidQuota { get; }

    public long InUse
    {
        get
        {
            lock (_gate)
            {
                return _inUse;
            }
        }
    }

    /// <summary>Bytes charged to <paramref name="uid"/> now.</summary>
    public long InUseBy(uint uid)
    {
        lock (_gate)
        {
            return _byUid.GetValueOrDefault(uid);
        }
    }

    /// <summary>Charges <paramref name="bytes"/> to <paramref name="uid"/>, or throws NoResources (nothing charged).</summary>
    public void Charge(uint uid, long bytes, string what)
    {
        lock (_gate)
        {
            if (_inUse + bytes > Limit)
            {
                throw new BrokerError(ErrorCode.NoResources, string.Create(CultureInfo.InvariantCulture,
                    $"{what} of {bytes} bytes exceeds the broker's memory limit ({_inUse} of {Limit} bytes in use)"));
            }

            long mine = _byUid.GetValueOrDefault(uid);
            if (UidQuota > 0 && mine + bytes > UidQuota)
            {
                throw new BrokerError(ErrorCode.NoResources, string.Create(CultureInfo.InvariantCulture,
                    $"{what} of {bytes} bytes exceeds uid {uid}'s memory quota ({mine} of {UidQuota} bytes in use)"));
            }

            _inUse += bytes;
            _byUid[uid] = mine + bytes;
        }
    }

    /// <summary>Gives back what <see cref="Charge"/> charged.</summary>
    public void Release(uint uid, long bytes)
    {
        lock (_gate)
        {
            _inUse -= bytes;
            long left = _byUid.GetValueOrDefault(uid) - bytes;
            if (left > 0)
            {
                _byUid[uid] = left;
            }
            else
            {
                _byUid.Remove(uid);
            }
        }
    }
}
