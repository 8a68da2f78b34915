using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>Name waits of one session (issue 17): registered with the broker's <see cref="NameWaiters"/>, answered
/// by a pushed <c>name_event</c> on this connection.</summary>
internal sealed partial class ClientSession
{
    /// <summary>Sends a message the broker pushes to this client (a name_event, or the end of a wait), from any thread.</summary>
    public void Push(Response message)
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
            _state.Names.Wait(this, req.Id, wait.ContainerId, wait.Name, timeout, () => _state.NameExists(this, wait));
        }
        catch (BrokerError e)
        {
            Reply(new Response { Id = req.Id, Error = (Protocol.ErrorCode)e.Code, Message = e.Message });
        }
    }
}
