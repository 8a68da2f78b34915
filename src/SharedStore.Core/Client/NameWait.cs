using System.Diagnostics;
using SharedStore.Protocol;

namespace SharedStore;

/// <summary>
/// Joining a container or object as soon as it exists, without polling (issue 17): one <c>name_wait</c> with
/// <c>join</c> set. The broker registers the wait before it checks the name, so no creation is missed, and when the
/// name exists (at once, or when it is created) it joins it on this client's behalf and pushes that join's reply
/// (docs/ARCHITECTURE.md §6, "Name waits"): the call returns after the one push, with no second round trip. A name
/// destroyed between the event and the join is waited for again by the broker. One loop for both kinds; every caller
/// uses it.
/// </summary>
internal static class NameWaitLoop
{
    /// <summary>While no broker answers (it is restarting), the one case with nothing to push: look again this often.</summary>
    private static readonly TimeSpan s_brokerRetry = TimeSpan.FromMilliseconds(50);

    /// <param name="what">For messages: "container 'x'".</param>
    /// <param name="timeout">The whole call's budget.</param>
    /// <param name="cancellationToken">Cancels the wait (the broker's wait with it).</param>
    /// <param name="connection">The connection to wait on (a container wait reconnects; an object wait uses its container's).</param>
    /// <param name="containerId">0 for a container name, else the object's container.</param>
    /// <param name="name">The name.</param>
    /// <param name="retryBrokerLoss">Wait across a broker restart (containers; an object's handles die with their broker).</param>
    /// <param name="open">Makes the handle from the join reply the broker pushed (and the descriptors it carried).</param>
    public static T Run<T>(string what, TimeSpan timeout, CancellationToken cancellationToken, Func<BrokerConnection> connection, uint containerId, string name, bool retryBrokerLoss, Func<BrokerConnection, Response, List<SafeFd>, T> open)
    {
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "a timeout is zero or more, or Timeout.InfiniteTimeSpan");
        }

        var sw = Stopwatch.StartNew();
        SharedStoreException? last = null;
        while (true)
        {
            TimeSpan left = timeout == Timeout.InfiniteTimeSpan ? Timeout.InfiniteTimeSpan : timeout - sw.Elapsed;
            if (left != Timeout.InfiniteTimeSpan && left < TimeSpan.Zero)
            {
                throw new SharedStoreException(ErrorCode.Timeout, $"{what} did not appear within {timeout}" + (last is null ? "" : $" (last: {last.Code}: {last.Message})"), last);
            }

            try
            {
                var conn = connection();
                var r = conn.Call(new Request { NameWait = new Protocol.NameWait { ContainerId = containerId, Name = name, Join = true } }, left, cancellationToken, brokerWaits: true);
                return open(conn, r.Response, r.Fds);
            }
            catch (SharedStoreException e) when (e.Code == ErrorCode.Timeout)
            {
                throw new SharedStoreException(ErrorCode.Timeout, $"{what} did not appear within {timeout}", e);
            }
            catch (SharedStoreException e) when (retryBrokerLoss && e.Code == ErrorCode.BrokerUnavailable)
            {
                // No broker to push anything: the next wait connects again (and may start one, as the options say).
                last = e;
                cancellationToken.WaitHandle.WaitOne(s_brokerRetry);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }
}
