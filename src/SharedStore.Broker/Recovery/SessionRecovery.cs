namespace SharedStore.Broker;

/// <summary>
/// A client's socket closed (it exited or was killed): its lock holds are released at once, before its applier
/// drains its ring, and then its memberships go (docs/ARCHITECTURE.md, "Recovery"). Under the model lock.
/// </summary>
internal sealed class SessionRecovery(BrokerModel model, ContainerRegistry registry, LockRepair repair, BrokerMetrics? metrics)
{
    /// <summary>Releases the lock holds of a dead client's slots now, before its applier drains the ring (a pending
    /// write may wait for a block the dead process held). Memberships stay until <see cref="SessionClosed"/>.</summary>
    public void ScrubSession(ClientSession session)
    {
        using (model.Enter())
        {
            if (model.Disposed)
            {
                return;
            }

            foreach (var m in model.MembershipsOf(session).Values)
            {
                repair.ScrubSlot(m.Container, m.Slot, "death", session.Credentials.Pid);
            }
        }
    }

    /// <summary>The client's socket closed: it exited or was killed. Release everything it held.</summary>
    public void SessionClosed(ClientSession session)
    {
        using (model.Enter())
        {
            if (model.Disposed)
            {
                return; // shutting down: the segments are gone, and with them everything the session held
            }

            var memberships = model.MembershipsOf(session);
            if (memberships.Count == 0)
            {
                return;
            }

            long released = 0;
            foreach (var m in memberships.Values.ToList())
            {
                released += registry.RemoveMember(m, died: true);
            }

            metrics?.SessionRecovered(released);
        }
    }
}
