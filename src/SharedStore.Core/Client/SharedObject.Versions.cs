using System.Diagnostics;
using System.Runtime.CompilerServices;
using SharedStore.Locks;

namespace SharedStore;

/// <summary>Versions and change waits of a joined object (issue 17; protocol in <see cref="ObjectVersion"/>,
/// docs/ARCHITECTURE.md §4.1).</summary>
public sealed unsafe partial class SharedObject
{
    /// <summary>
    /// The object's version: 0 when created, one more for every completed <see cref="Write(long, ReadOnlySpan{byte}, TimeSpan, CancellationToken)"/>,
    /// every asynchronous write the broker applied, and a durable restore. Advanced after the data is in place, so a
    /// version read here never claims data that is not there. One load from shared memory, no system call.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The object was left.</exception>
    public long Version
    {
        get
        {
            ThrowIfClosed();
            return ObjectVersion.Read(_view.Locks);
        }
    }

    /// <summary>
    /// The blocks (indexes, ascending; block i covers [i·BlockSize, (i+1)·BlockSize)) changed by writes with a version
    /// above <paramref name="version"/>, plus any block a write is changing right now or a writer that died left torn.
    /// Read <see cref="Version"/> first and pass it next time: a write that completes in between is reported twice,
    /// never missed. No system call; one load per block.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The object was left.</exception>
    public IReadOnlyList<long> ChangedBlocksSince(long version)
    {
        ThrowIfClosed();
        var changed = new List<long>();
        ObjectVersion.ChangedSince(_view, version, changed);
        return changed;
    }

    /// <summary>
    /// Waits until the object's version is no longer <paramref name="lastSeenVersion"/> and returns the new version
    /// (at once when it already differs). Spins for the client's lock spin time (30 µs by default), then sleeps on a
    /// futex in the object's shared memory; writers make the wake system call only when someone sleeps.
    /// </summary>
    /// <exception cref="SharedStoreException">Timeout; BrokerUnavailable (the broker died while waiting).</exception>
    /// <exception cref="OperationCanceledException">The token fired.</exception>
    /// <exception cref="ObjectDisposedException">The object was left.</exception>
    public long WaitForChange(long lastSeenVersion, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        ThrowIfBrokerLost();
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "a timeout is zero or more, or Timeout.InfiniteTimeSpan");
        }

        long ticks = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        switch (ObjectVersion.WaitForChange(_view.Locks, lastSeenVersion, ticks, cancellationToken, _conn.WaitPolicy, out long version))
        {
            case VersionWaitStatus.Changed:
                return version;
            case VersionWaitStatus.Timeout:
                ThrowHelper.Timeout($"wait for a change of '{Name}' after version {lastSeenVersion}");
                break;
            case VersionWaitStatus.Canceled:
                ThrowHelper.Canceled("wait for a change", cancellationToken);
                break;
            default:
                ThrowHelper.BrokerLost();
                break;
        }

        return version;
    }

    /// <summary>
    /// Waits until the object's version is at least <paramref name="version"/> and returns it (at once when it is).
    /// On a replica (<see cref="Container.IsReplica"/>) versions are the owner's: a replica's object version is raised
    /// to v only once every block the owner had written up to its version v is applied here (docs/ARCHITECTURE.md
    /// §14), so after the owner's <c>Flush</c> has returned, waiting here for the owner's <see cref="Version"/> read
    /// before that flush means the replica has caught up to it. Built on <see cref="WaitForChange"/>; one timeout
    /// covers the whole wait.
    /// </summary>
    /// <exception cref="SharedStoreException">Timeout; BrokerUnavailable.</exception>
    /// <exception cref="OperationCanceledException">The token fired.</exception>
    /// <exception cref="ObjectDisposedException">The object was left.</exception>
    public long WaitForVersion(long version, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "a timeout is zero or more, or Timeout.InfiniteTimeSpan");
        }

        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)Math.Ceiling(timeout.TotalMilliseconds);
        long seen = Version;
        while (seen < version)
        {
            long left = deadline == long.MaxValue ? -1 : Math.Max(0, deadline - Environment.TickCount64);
            try
            {
                seen = WaitForChange(seen, left < 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(left), cancellationToken);
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.Timeout)
            {
                ThrowHelper.Timeout($"wait for version {version} of '{Name}' (at version {Version})");
            }
        }

        return seen;
    }

    /// <summary>
    /// The versions of the object as it changes, starting with the first change after the version current at the
    /// call: <c>await foreach (var v in obj.Changes(ct))</c>. Versions that follow each other faster than the consumer
    /// reads are coalesced (it sees the newest). Each wait runs on a thread-pool thread; ends with the token
    /// (OperationCanceledException) or an error of <see cref="WaitForChange"/>.
    /// </summary>
    public async IAsyncEnumerable<long> Changes([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        long seen = Version;
        while (true)
        {
            long last = seen;
            seen = await Task.Run(() => WaitForChange(last, Timeout.InfiniteTimeSpan, cancellationToken), cancellationToken).ConfigureAwait(false);
            yield return seen;
        }
    }
}
