using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using SharedStore.Protocol;

namespace SharedStore.Broker;

/// <summary>
/// How a failed request becomes a reply: the one place the broker turns an exception into a wire error.
/// <list type="bullet">
/// <item>A <see cref="BrokerError"/> is a refusal the broker decided (NotFound, PermissionDenied, Timeout...): its code
/// and message go to the client as they are.</item>
/// <item>Any other <see cref="SharedStoreException"/> (a device or system call failed: IoError, NoResources...) goes
/// to the client with its code and message too, and is logged (event 52) with its errno, for the operator.</item>
/// <item>Anything else, and a SharedStoreException with code Internal, is a bug. The client receives
/// <c>internal error, see broker log, error id X</c> and nothing more: no exception type, no message, no stack trace,
/// which would tell a client of another user about the broker's code and state. The broker logs the whole exception
/// under the same id (event 5, InternalError), so the client's error can be looked up in the broker log.</item>
/// </list>
/// </summary>
internal static class ErrorReplies
{
    /// <summary>Sets <paramref name="resp"/>'s error and message for <paramref name="e"/>, thrown by a
    /// <paramref name="request"/> request, and logs what the operator must see.</summary>
    public static void Fill(Response resp, Exception e, string request, ILogger logger)
    {
        switch (e)
        {
            case BrokerError refusal:
                resp.Error = WireErrors.ToWire(refusal.Code);
                resp.Message = refusal.Message;
                return;
            case SharedStoreException failure when failure.Code != ErrorCode.Internal:
                resp.Error = WireErrors.ToWire(failure.Code);
                resp.Message = failure.Message;
                Log.RequestFailed(logger, request, failure.Code, failure.Errno, failure.Message);
                return;
            default:
                string id = NewErrorId();
                Log.InternalError(logger, id, request, e);
                resp.Error = Protocol.ErrorCode.Internal;
                resp.Message = InternalMessage(id);
                return;
        }
    }

    /// <summary>What a client receives for an internal error.</summary>
    public static string InternalMessage(string errorId) => $"internal error, see broker log, error id {errorId}";

    /// <summary>Twelve hex digits, random: unique enough to find one error in a log that outlives broker restarts
    /// (a counter would start again at 1 with every broker).</summary>
    private static string NewErrorId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
}
