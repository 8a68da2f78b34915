using System.Collections.Concurrent;
using System.Globalization;
using NUnit.Framework.Interfaces;
using SharedStore.Diagnostics;

// Every test of an assembly that compiles this harness runs under a watchdog: the suites that drive other processes.
[assembly: SharedStore.Tests.Harness.TestWatchdog]

namespace SharedStore.Tests.Harness;

/// <summary>
/// A test that drives other processes must never wait forever. Each test gets a budget (<see cref="BudgetAttribute"/>
/// on the test or its fixture, else <see cref="DefaultBudgetSeconds"/>, else <c>SHAREDSTORE_TEST_BUDGET_SECONDS</c>).
/// Past it, the watchdog writes the stacks of the test process and of every process it started (managed stacks through
/// EventPipe, native ones through gdb) to the test log, kills those processes so that a test blocked on them comes
/// back, and fails the test naming it. A test that still does not come back within a minute ends the test host: the
/// run is then reported as aborted, with the report above it, instead of hanging CI.
/// </summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class TestWatchdogAttribute : Attribute, ITestAction
{
    public const int DefaultBudgetSeconds = 300;

    private static readonly ConcurrentDictionary<string, Watchdog> s_running = new();

    public ActionTargets Targets => ActionTargets.Test;

    public void BeforeTest(ITest test)
    {
        var budget = TimeSpan.FromSeconds(BudgetOf(test));
        string name = test.FullName;
        s_running[test.Id] = Watchdog.Start($"test {name}", budget, report =>
        {
            // The test host's stderr reaches the console of `dotnet test` even when the test never returns; the file
            // keeps the report whole; AfterTest puts it into the failure message when the test does return.
            Console.Error.WriteLine(report);
            try
            {
                File.WriteAllText(Path.Combine(Path.GetTempPath(), $"sharedstore-watchdog-{Environment.ProcessId}-{test.Id}.txt"), report);
            }
            catch (IOException)
            {
            }

            Watchdog.KillDescendants();
            var grace = new Thread(() =>
            {
                Thread.Sleep(TimeSpan.FromSeconds(60));
                if (s_running.ContainsKey(test.Id))
                {
                    Environment.FailFast($"watchdog: test {name} exceeded its budget of {budget.TotalSeconds:0} s and did not come back within 60 s of its processes being killed");
                }
            })
            { IsBackground = true, Name = "watchdog-grace" };
            grace.Start();
        });
    }

    public void AfterTest(ITest test)
    {
        if (s_running.TryRemove(test.Id, out var w))
        {
            w.Dispose();
            if (w.Fired)
            {
                Assert.Fail(w.WaitForReport(TimeSpan.FromSeconds(90)) ?? w.Headline + " (the stacks were not ready within 90 s)");
            }
        }
    }

    private static double BudgetOf(ITest test)
    {
        var own = test.Method?.GetCustomAttributes<BudgetAttribute>(true).FirstOrDefault()
            ?? test.TypeInfo?.GetCustomAttributes<BudgetAttribute>(true).FirstOrDefault();
        if (own is not null)
        {
            return own.Seconds;
        }

        return double.TryParse(Environment.GetEnvironmentVariable("SHAREDSTORE_TEST_BUDGET_SECONDS"), NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s > 0
            ? s
            : DefaultBudgetSeconds;
    }
}

/// <summary>The watchdog budget of a test or of every test of a fixture, in seconds (see <see cref="TestWatchdogAttribute"/>).</summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Class)]
public sealed class BudgetAttribute(double seconds) : Attribute
{
    public double Seconds { get; } = seconds;
}
