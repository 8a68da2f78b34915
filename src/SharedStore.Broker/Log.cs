using Microsoft.Extensions.Logging;

namespace SharedStore.Broker;

/// <summary>
/// Every log message of the broker, source-generated (no formatting unless the level is enabled). Event ids are
/// stable: operators filter and alert on them, so an id is never reused for another meaning. Reserved: 8–9
/// (session open/close detail), 20–29 (asynchronous writes and durable write-back, issue 5). 30–32: connections.
/// 40: lock-state repair. 50–59: replies to requests (issue 13, finding 4; 52: a system or device error, issue 14).
/// </summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, EventName = "BrokerListening", Level = LogLevel.Information,
        Message = "broker pid {Pid} listening on {SocketPath}")]
    public static partial void BrokerListening(ILogger logger, int pid, string socketPath);

    [LoggerMessage(EventId = 2, EventName = "BrokerStopping", Level = LogLevel.Information,
        Message = "broker stopping")]
    public static partial void BrokerStopping(ILogger logger);

    [LoggerMessage(EventId = 3, EventName = "BrokerRefused", Level = LogLevel.Error,
        Message = "broker not started: {Reason}")]
    public static partial void BrokerRefused(ILogger logger, string reason);

    [LoggerMessage(EventId = 4, EventName = "SessionFailed", Level = LogLevel.Error,
        Message = "session of pid {Pid} failed")]
    public static partial void SessionFailed(ILogger logger, int pid, Exception exception);

    [LoggerMessage(EventId = 5, EventName = "InternalError", Level = LogLevel.Error,
        Message = "internal error, error id {ErrorId}, on {Request}")]
    public static partial void InternalError(ILogger logger, string errorId, string request, Exception exception);

    [LoggerMessage(EventId = 6, EventName = "DeadClientRecovered", Level = LogLevel.Warning,
        Message = "recovered {Released} lock record(s) of dead pid {Pid} in container '{Container}'")]
    public static partial void DeadClientRecovered(ILogger logger, long released, int pid, string container);

    [LoggerMessage(EventId = 7, EventName = "UnhandledException", Level = LogLevel.Critical,
        Message = "FATAL unhandled exception: {Exception}")]
    public static partial void UnhandledException(ILogger logger, object exception);

    [LoggerMessage(EventId = 10, EventName = "ConfigurationLoaded", Level = LogLevel.Debug,
        Message = "socket {SocketPath}, system-wide {SystemWide}, memory limit {MemoryLimit} bytes, log file {LogPath}")]
    public static partial void ConfigurationLoaded(ILogger logger, string socketPath, bool systemWide, long memoryLimit, string logPath);

    [LoggerMessage(EventId = 11, EventName = "WriteBackFailed", Level = LogLevel.Error,
        Message = "write-back of durable container '{Container}' failed: {Error}; the blocks stay dirty in memory")]
    public static partial void WriteBackFailed(ILogger logger, string container, string error);

    [LoggerMessage(EventId = 12, EventName = "DurableRestored", Level = LogLevel.Information,
        Message = "restored durable object '{Container}/{Object}': {Blocks} block(s), {TornSlots} torn slot(s) skipped, {CorruptBlocks} corrupt block(s) marked torn")]
    public static partial void DurableRestored(ILogger logger, string container, string @object, long blocks, long tornSlots, long corruptBlocks);

    [LoggerMessage(EventId = 13, EventName = "DurableRestoreFailed", Level = LogLevel.Error,
        Message = "cannot restore durable container in '{Directory}': {Error}")]
    public static partial void DurableRestoreFailed(ILogger logger, string directory, string error);

    [LoggerMessage(EventId = 30, EventName = "ConnectionRefused", Level = LogLevel.Warning,
        Message = "refused connections of uid {Uid}: it has its maximum of {Max} open ({Refused} refused since the last report)")]
    public static partial void ConnectionRefused(ILogger logger, uint uid, int max, long refused);

    [LoggerMessage(EventId = 31, EventName = "SessionStartFailed", Level = LogLevel.Error,
        Message = "could not start a session for pid {Pid}: {Error}; its connection is closed and the broker goes on")]
    public static partial void SessionStartFailed(ILogger logger, int pid, string error);

    [LoggerMessage(EventId = 32, EventName = "AcceptFailed", Level = LogLevel.Error,
        Message = "accepting a connection failed: {Error}; the broker goes on accepting")]
    public static partial void AcceptFailed(ILogger logger, string error);

    [LoggerMessage(EventId = 14, EventName = "DurableBlockCorrupt", Level = LogLevel.Warning,
        Message = "durable object '{Container}/{Object}': block {Block} has no valid copy on disk (slot 0: {Slot0}; slot 1: {Slot1}); it is zeroed and marked torn")]
    public static partial void DurableBlockCorrupt(ILogger logger, string container, string @object, long block, string slot0, string slot1);

    [LoggerMessage(EventId = 40, EventName = "LockStateRepaired", Level = LogLevel.Warning,
        Message = "cleared lock state naming no live member in {Records} lock record(s) of container '{Container}' ({What}) on {Occasion}")]
    public static partial void LockStateRepaired(ILogger logger, long records, string container, string what, string occasion);

    [LoggerMessage(EventId = 50, EventName = "ReplyFailed", Level = LogLevel.Warning,
        Message = "could not send reply {RequestId} ({Body}, {Bytes} bytes) to pid {Pid}: {Error}; {Outcome}")]
    public static partial void ReplyFailed(ILogger logger, ulong requestId, string body, int bytes, int pid, string error, string outcome);

    [LoggerMessage(EventId = 51, EventName = "ReplyUndeliverable", Level = LogLevel.Debug,
        Message = "reply {RequestId} ({Body}) not delivered: pid {Pid} is gone ({Error})")]
    public static partial void ReplyUndeliverable(ILogger logger, ulong requestId, string body, int pid, string error);

    [LoggerMessage(EventId = 52, EventName = "RequestFailed", Level = LogLevel.Warning,
        Message = "{Request} failed with {Code} (errno {Errno}): {Reason}")]
    public static partial void RequestFailed(ILogger logger, string request, ErrorCode code, int errno, string reason);

    [LoggerMessage(EventId = 60, EventName = "ReplicationFailed", Level = LogLevel.Warning,
        Message = "replication of container '{Container}': {Reason}")]
    public static partial void ReplicationFailed(ILogger logger, string container, string reason);

    [LoggerMessage(EventId = 61, EventName = "ReplicationFenced", Level = LogLevel.Error,
        Message = "replicated container '{Container}': this broker stopped publishing: {Reason}")]
    public static partial void ReplicationFenced(ILogger logger, string container, string reason);

    [LoggerMessage(EventId = 62, EventName = "ReplicationRejected", Level = LogLevel.Warning,
        Message = "replica of container '{Container}' dropped a message: {Reason}")]
    public static partial void ReplicationRejected(ILogger logger, string container, string reason);

    [LoggerMessage(EventId = 68, EventName = "ReplicationTakenOver", Level = LogLevel.Warning,
        Message = "replicated container '{Container}': ownership taken over (failover), epoch {Epoch}, {Objects} objects read from the stream; catalog and lease read in {ReadMs} ms, lease watched {WaitMs} ms, taken in {TakeMs} ms, stream read in {StreamMs} ms")]
    public static partial void ReplicationTakenOver(ILogger logger, string container, ulong epoch, int objects, long readMs, long waitMs, long takeMs, long streamMs);

    [LoggerMessage(EventId = 69, EventName = "ReplicaConsumerStarted", Level = LogLevel.Information,
        Message = "replica of container '{Container}': consumer {Consumer} started again from stream sequence {From}")]
    public static partial void ReplicaConsumerStarted(ILogger logger, string container, string consumer, ulong from);
}
