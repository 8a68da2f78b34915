using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Name waits of one session (issue 17): registered with the broker's <see cref="NameWaiters"/>, answered
/// by a pushed <c>name_event</c> on this connection.</summary>
internal sealed partial class ClientSession
{
    // Leaf of the model lock (taken before it, never while holding it): see JoinForWaiter.
    private readonly Lock _nameJoinGate = new();
    private bool _nameJoinsClosed;

    /// <summary>Sends a message the broker pushes to this client (a name_event, or the end of a wait), from any thread.</summary>
    public void Push(Response message) => Push((message, null));

    /// <summary>Sends a pushed reply with the segment descriptors it carries (a join made for a name wait).</summary>
    public void Push((Response Response, SegmentGrant? Grant) message)
    {
        try
        {
            Reply(message);
        }
        catch (ObjectDisposedException)
        {
            // the session ended after the waiter was taken out: there is no one left to tell
        }
    }

    private void WaitForName(Request req)
    {
        TimeSpan timeout = req.TimeoutMs == uint.MaxValue ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(req.TimeoutMs);
        var wait = req.NameWait;
        try
        {
            _state.Names.Wait(this, req.Id, wait.ContainerId, wait.Name, timeout, () => _state.NameExists(this, wait), wait.Join ? () => JoinForWaiter(req.Id, wait) : null);
        }
        catch (BrokerError e)
        {
            Reply(new Response { Id = req.Id, Error = (Protocol.ErrorCode)e.Code, Message = e.Message });
        }
    }

    /// <summary>name_wait.join: the join this session's waiter would make next, made for it when the name exists (from
    /// the creator's push or this session's own thread). Under <see cref="_nameJoinGate"/>: a session that is closing
    /// joins nothing (<see cref="CloseNameJoins"/> runs before its memberships are released, so a join made here is
    /// always released by that close). Errors: what the join throws (BrokerError), or an internal error reply.</summary>
    private (Response Response, SegmentGrant? Grant)? JoinForWaiter(ulong requestId, NameWait wait)
    {
        lock (_nameJoinGate)
        {
            if (_nameJoinsClosed)
            {
                return null;
            }

            var resp = new Response { Id = requestId };
            try
            {
                if (wait.ContainerId == 0)
                {
                    resp.Container = _state.JoinContainer(this, new ContainerJoin { Name = wait.Name }).Info;
                    return (resp, null);
                }

                (resp.Object, var grant) = _state.JoinObject(this, new ObjectJoin { ContainerId = wait.ContainerId, Name = wait.Name });
                resp.Segments.AddRange(grant.Segments);
                return (resp, grant);
            }
            catch (Exception e) when (e is not (BrokerError or OutOfMemoryException))
            {
                ErrorReplies.Fill(resp, e, Kind(Request.BodyOneofCase.NameWait), _server.Logger);
                return (resp, null);
            }
        }
    }

    /// <summary>The session is closing: from now on no join is made on its behalf (called before its memberships are
    /// released; waits for a join in progress).</summary>
    private void CloseNameJoins()
    {
        lock (_nameJoinGate)
        {
            _nameJoinsClosed = true;
        }
    }
}
