using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// Who may do what to a container (docs/ARCHITECTURE.md §2, trust model), each rule written once: create for a group,
/// join (and look at: holders), write (create and destroy objects), destroy the container. Each check throws the
/// <see cref="BrokerError"/> the client receives. Stateless; the caller holds the model lock where the container is read.
/// </summary>
internal static class AccessPolicy
{
    private const int MaxNameBytes = 255;

    /// <summary>A container or object name: 1 to 255 UTF-8 bytes, no NUL.</summary>
    public static void ValidateName(string name, string what)
    {
        if (string.IsNullOrEmpty(name) || System.Text.Encoding.UTF8.GetByteCount(name) > MaxNameBytes || name.Contains('\0', StringComparison.Ordinal))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"{what} name must be 1 to {MaxNameBytes} UTF-8 bytes without NUL");
        }
    }

    /// <summary>Only root may create a container for a group it is not in.</summary>
    public static void CheckCreate(PeerCredentials who, long groupId)
    {
        if (groupId < 0 || groupId > uint.MaxValue - 1)
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"group id {groupId} is not a Unix group id");
        }

        if (!who.IsRoot && !who.InGroup(groupId))
        {
            throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} is not in group {groupId}; only root may create a container for a group it is not in");
        }
    }

    /// <summary>Join (and holders): root, the creator, or a member of the container's group.</summary>
    public static void CheckJoin(PeerCredentials who, ContainerState c)
    {
        if (!who.IsRoot && who.Uid != c.CreatorUid && !who.InGroup(c.GroupId))
        {
            throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} is not in group {c.GroupId} of container '{c.Name}'");
        }
    }

    /// <summary>Whether a member may write the container's objects and create or destroy objects in it. A replica's
    /// members never write (docs/ARCHITECTURE.md §14): they get the read-only descriptor, so the kernel enforces it,
    /// and their write calls fail with PermissionDenied.</summary>
    public static bool CanWrite(ContainerState c, PeerCredentials who) =>
        c.ReplicationReplica is null && (c.WritePolicy == Protocol.WritePolicy.AllMembers || who.Uid == c.CreatorUid || who.IsRoot);

    /// <summary>Object create or destroy (<paramref name="verb"/>) needs a member that may write.</summary>
    public static void CheckWriter(Membership m, string verb)
    {
        if (!m.CanWrite)
        {
            throw new BrokerError(ErrorCode.PermissionDenied, m.Container.ReplicationReplica is not null
                ? $"container '{m.Container.Name}' is a replica: its owner's broker {verb}s objects"
                : $"container '{m.Container.Name}' lets only its creator {verb} objects");
        }
    }

    /// <summary>Only the creator or root may destroy a container.</summary>
    public static void CheckDestroy(PeerCredentials who, ContainerState c)
    {
        if (who.Uid != c.CreatorUid && !who.IsRoot)
        {
            throw new BrokerError(ErrorCode.PermissionDenied, $"only the creator (uid {c.CreatorUid}) or root may destroy container '{c.Name}'");
        }
    }
}
