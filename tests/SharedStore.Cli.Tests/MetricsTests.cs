using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;
using SharedStore.Cli.Tests.Harness;

namespace SharedStore.Cli.Tests;

/// <summary>The broker's SharedStore.Broker meter read out of process, the way dotnet-counters reads it: an EventPipe
/// session on the System.Diagnostics.Metrics event source of the running broker, parsed with TraceEvent.</summary>
[TestFixture]
[Category("Cli")]
public sealed class MetricsTests
{
    // Keywords of System.Diagnostics.Metrics' event source: 0x2 TimeSeriesValues, 0x4 InstrumentPublishing.
    private const long MetricsKeywords = 0x2 | 0x4;

    [Test]
    public void Meter_RunningBroker_PublishesOperationsAndBytesOverEventPipe()
    {
        // Contract: a broker process publishes sharedstore.broker.operations (tag kind) and sharedstore.broker.object.bytes
        // on meter SharedStore.Broker, readable from another process.
        using var broker = BrokerProcess.Start();
        using var a = ClientProcess.Start("A");
        a.Ok($"connect {broker.SocketPath}");
        a.Ok($"create-container m-con {SharedStoreClient.ProcessGroupId}");
        a.Ok("create-object m-obj 65536");

        var client = new DiagnosticsClient(broker.Pid);
        var provider = new EventPipeProvider("System.Diagnostics.Metrics", EventLevel.Informational, MetricsKeywords, new Dictionary<string, string>
        {
            ["SessionId"] = "sharedstore-test",
            ["Metrics"] = "SharedStore.Broker",
            ["RefreshInterval"] = "0.5",
            ["MaxTimeSeries"] = "1000",
            ["MaxHistograms"] = "10",
        });
        using var session = client.StartEventPipeSession([provider], requestRundown: false);

        var seen = new Dictionary<string, string>(StringComparer.Ordinal); // instrument(tags) -> value
        var done = new ManualResetEventSlim();
        var source = new EventPipeEventSource(session.EventStream);
        source.Dynamic.All += e =>
        {
            if (e.ProviderName != "System.Diagnostics.Metrics"
                || e.EventName is not ("CounterRateValuePublished" or "GaugeValuePublished" or "UpDownCounterRateValuePublished"))
            {
                return;
            }

            if ((string)e.PayloadByName("meterName") != "SharedStore.Broker")
            {
                return;
            }

            string name = (string)e.PayloadByName("instrumentName");
            string tags = (string)e.PayloadByName("tags");
            string value = e.EventName == "UpDownCounterRateValuePublished" || e.EventName == "GaugeValuePublished"
                ? Convert.ToString(e.PayloadByName("value"), System.Globalization.CultureInfo.InvariantCulture) ?? ""
                : Convert.ToString(e.PayloadByName("rate"), System.Globalization.CultureInfo.InvariantCulture) ?? "";
            lock (seen)
            {
                // A counter publishes its rate per interval: keep the largest, so one busy interval is enough.
                string key = $"{name}({tags})";
                if (!seen.TryGetValue(key, out string? old) || Number(value) >= Number(old))
                {
                    seen[key] = value;
                }

                if (seen.Any(kv => kv.Key.StartsWith("sharedstore.broker.operations(kind=object_join", StringComparison.Ordinal) && Number(kv.Value) > 0)
                    && seen.ContainsKey("sharedstore.broker.object.bytes()"))
                {
                    done.Set();
                }
            }
        };
        var pump = new Thread(() =>
        {
            try
            {
                source.Process();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
            {
                // the session was stopped under the reader
            }
        })
        { IsBackground = true, Name = "eventpipe-pump" };
        pump.Start();

        // Counters publish rates per interval: keep the broker busy so an operations series exists in every interval.
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!done.IsSet && sw.Elapsed < TimeSpan.FromSeconds(20))
        {
            a.Ok("join-object m-obj");
            a.Ok("leave-object m-obj");
            done.Wait(250);
        }

        session.Stop();
        pump.Join(TimeSpan.FromSeconds(10));
        source.Dispose();
        string all;
        lock (seen)
        {
            all = string.Join("; ", seen.Select(kv => $"{kv.Key}={kv.Value}"));
        }

        TestContext.Progress.WriteLine($"  EventPipe: {all}");
        Assert.That(done.IsSet, Is.True, $"instruments seen: {all}");
        lock (seen)
        {
            Assert.That(seen["sharedstore.broker.object.bytes()"], Is.EqualTo("65536"));
            Assert.That(Number(seen["sharedstore.broker.operations(kind=object_join)"]), Is.GreaterThan(0));
        }
    }

    private static double Number(string s) =>
        double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : 0;
}
