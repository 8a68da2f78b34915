using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>The broker state's side of name waits (issue 17): the waiters, and whether a name exists now.</summary>
internal sealed partial class BrokerState
{
    /// <summary>Sessions waiting for names to be created.</summary>
    public NameWaiters Names { get; } = new();

    /// <summary>Whether the container (<see cref="NameWait.ContainerId"/> 0) or object named by <paramref name="req"/>
    /// exists and is not being destroyed.</summary>
    /// <exception cref="BrokerError">InvalidArgument (a bad name); NotFound (an object wait by a non-member of the
    /// container).</exception>
    public bool NameExists(ClientSession session, NameWait req)
    {
        ValidateName(req.Name, req.ContainerId == 0 ? "container" : "object");
        lock (_gate)
        {
            if (req.ContainerId == 0)
            {
                return _containers.TryGetValue(req.Name, out var c) && !c.Destroying;
            }

            var m = Member(session, req.ContainerId);
            return m.Container.Objects.TryGetValue(req.Name, out var o) && !o.Destroying;
        }
    }
}
