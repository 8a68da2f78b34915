namespace SharedStore.Protocol;

/// <summary>Version of the wire protocol in <c>sharedstore.proto</c>. Bump it on any change a peer of the other
/// version would misread; the broker rejects a hello of another version with VERSION_MISMATCH.</summary>
internal static class ProtocolConstants
{
    /// <remarks>2: replies larger than one part are split into parts (Response.part/more); holders lists every block.
    /// 3: the wire ErrorCode has the public ErrorCode's numbers (BUSY moved from 11, WouldDeadlock's number, to 13) and
    /// gained IO_ERROR = 14; internal errors carry an error id instead of the broker's stack trace.
    /// 4: name_wait and its pushed name_event; lock tables of layout 2 (object versions in each lock record).
    /// 5: lock tables of layout 3 (records of 1-64 reader lines, up to 4 096 slots); container_create's max_members;
    /// ContainerInfo's max_members and lock_lines; lock_check lists slots instead of 64-bit masks; name_wait.join: the
    /// broker joins on the waiter's behalf and pushes the join's reply.
    /// 6: container_create's and ContainerInfo's replication (issue 18): a client of 5 would not mark its writes of a
    /// replicated container dirty, so its writes would never be published.</remarks>
    public const uint ProtocolVersion = 6;

    /// <summary>Largest datagram either side sends or accepts (1 &lt;&lt; 20, 1 MiB).</summary>
    public const int MaxMessageBytes = 1 << 20;

    /// <summary>Largest number of descriptors attached to one datagram (the kernel's SCM_MAX_FD is 253).</summary>
    public const int MaxFdsPerMessage = 250;
}
