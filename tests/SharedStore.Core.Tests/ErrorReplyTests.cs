using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using SharedStore.Broker;
using SharedStore.Devices;
using SharedStore.Protocol;

namespace SharedStore.Core.Tests;

/// <summary>
/// How the broker turns a failed request into a reply (ErrorReplies, issue 14, item 3). The internal-error test failed
/// on the old code's behaviour (the client's message was <c>e.ToString()</c>: type, message and stack trace), checked by
/// putting that line back into ErrorReplies.Fill.
/// </summary>
[TestFixture]
public sealed partial class ErrorReplyTests
{
    [Test]
    public void InternalError_ClientGetsOnlyAnErrorId_TheBrokerLogsTheDetailsUnderIt()
    {
        var log = new ListLogger();
        var resp = new Response { Id = 7 };
        Exception bug = Thrown(() => Fail("secret broker state 0xDEAD"));

        ErrorReplies.Fill(resp, bug, "container_create", log);

        Assert.That(resp.Error, Is.EqualTo(Protocol.ErrorCode.Internal));
        var m = IdOnly().Match(resp.Message);
        Assert.That(m.Success, Is.True, $"the client's message is the id only: '{resp.Message}'");
        Assert.That(resp.Message, Does.Not.Contain("secret").And.Not.Contain(" at ").And.Not.Contain(nameof(InvalidOperationException)));
        string id = m.Groups[1].Value;
        var entry = log.Entries.Single();
        Assert.That(entry.Level, Is.EqualTo(LogLevel.Error));
        Assert.That(entry.Message, Does.Contain(id).And.Contain("container_create"));
        Assert.That(entry.Exception, Is.SameAs(bug), "the log keeps the exception with its stack trace");
    }

    [Test]
    public void TwoInternalErrors_HaveDifferentIds()
    {
        var a = new Response();
        var b = new Response();
        ErrorReplies.Fill(a, new InvalidOperationException("x"), "list", new ListLogger());
        ErrorReplies.Fill(b, new InvalidOperationException("x"), "list", new ListLogger());
        Assert.That(a.Message, Is.Not.EqualTo(b.Message));
    }

    [Test]
    public void SharedStoreExceptionWithCodeInternal_IsTreatedAsABug()
    {
        var resp = new Response();
        ErrorReplies.Fill(resp, new SharedStoreException(SharedStore.ErrorCode.Internal, "object lies outside its segment"), "object_join", new ListLogger());
        Assert.That(resp.Error, Is.EqualTo(Protocol.ErrorCode.Internal));
        Assert.That(IdOnly().IsMatch(resp.Message), Is.True, resp.Message);
    }

    [Test]
    public void Refusal_GoesOutWithItsExactCodeAndMessage()
    {
        foreach (var code in Enum.GetValues<SharedStore.ErrorCode>().Where(c => c is not (SharedStore.ErrorCode.Ok or SharedStore.ErrorCode.Internal)))
        {
            var log = new ListLogger();
            var resp = new Response();
            ErrorReplies.Fill(resp, new BrokerError(code, $"refused with {code}"), "object_create", log);
            Assert.That((int)resp.Error, Is.EqualTo((int)code), code.ToString());
            Assert.That(resp.Message, Is.EqualTo($"refused with {code}"));
            Assert.That(log.Entries, Is.Empty, "a refusal is an expected outcome, not logged");
        }
    }

    [Test]
    public void DeviceError_GoesOutAsIoError_AndIsLoggedWithItsErrno()
    {
        var log = new ListLogger();
        var resp = new Response();
        ErrorReplies.Fill(resp, new DeviceException("pwrite failed for '/d/0.obj': Input/output error (errno 5)", 5), "flush", log);
        Assert.That(resp.Error, Is.EqualTo(Protocol.ErrorCode.IoError));
        Assert.That(resp.Message, Does.Contain("errno 5"));
        Assert.That(log.Entries.Single().Message, Does.Contain("errno 5").And.Contain("IoError"));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Fail(string what) => throw new InvalidOperationException(what);

    private static Exception Thrown(Action a)
    {
        try
        {
            a();
        }
        catch (Exception e)
        {
            return e;
        }

        throw new AssertionException("did not throw");
    }

    [GeneratedRegex("^internal error, see broker log, error id ([0-9a-f]{12})$")]
    private static partial Regex IdOnly();

    private sealed class ListLogger : ILogger
    {
        public List<(LogLevel Level, string Message, Exception? Exception)> Entries { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Add((logLevel, formatter(state, exception), exception));
    }
}
