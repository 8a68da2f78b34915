using System.Globalization;
using System.Text.Json;
using SharedStore.Bench;

// SharedStore.Bench: `dotnet run --project tools/SharedStore.Bench -c Release -- [--json] [--scale X] [--budget S] SCENARIO...`
// Runs the named scenarios (all when none is named) and prints value, baseline and ratio for each figure. Every
// scenario runs under a watchdog (--budget seconds, default 600): past it, the stacks of this process and of every
// process it started are written to stderr and the tool exits with code 124, naming the scenario.
if (args.Length > 0 && args[0] == "--child")
{
    return ChildRoles.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "--device-probe" && OperatingSystem.IsLinux())
{
    return SharedStore.Bench.Devices.DeviceProbe.Run(args[1..]);
}

var scenarios = ScenarioRegistry.All.ToDictionary(s => s.Name, StringComparer.Ordinal);
bool json = false;
double scale = 1.0;
double budgetSeconds = 600;
var names = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--json": json = true; break;
        case "--scale": scale = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--budget": budgetSeconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--list":
            foreach (var s in scenarios.Values)
            {
                Console.WriteLine($"{s.Name,-40} {s.Description}");
            }

            return 0;
        default:
            if (args[i].StartsWith('-') || !scenarios.ContainsKey(args[i]))
            {
                Console.Error.WriteLine($"unknown scenario or option '{args[i]}'; --list shows the scenarios");
                return 2;
            }

            names.Add(args[i]);
            break;
    }
}

if (names.Count == 0)
{
    names.AddRange(scenarios.Keys);
}

string work = Path.Combine(Path.GetTempPath(), $"sharedstore-bench-{Environment.ProcessId}");
Directory.CreateDirectory(work);
var results = new List<BenchResult>();
try
{
    var context = new BenchContext { Scale = scale, WorkDirectory = work };
    foreach (string name in names)
    {
        Console.Error.WriteLine($"# {name}");
        using var watchdog = SharedStore.Diagnostics.Watchdog.Start($"bench scenario {name}", TimeSpan.FromSeconds(budgetSeconds), report =>
        {
            Console.Error.WriteLine(report);
            Console.Error.WriteLine($"bench: scenario '{name}' did not finish within {budgetSeconds} s (stacks above); stopping");
            SharedStore.Diagnostics.Watchdog.KillDescendants();
            Environment.Exit(124);
        });
        results.AddRange(scenarios[name].Run(context));
    }
}
finally
{
    try { Directory.Delete(work, recursive: true); } catch (IOException) { }
}

if (json)
{
    var rows = results.Select(r => new Dictionary<string, object>
    {
        ["scenario"] = r.Scenario, ["metric"] = r.Metric, ["unit"] = r.Unit, ["value"] = Math.Round(r.Value, 4),
        ["baseline"] = r.Baseline, ["baseline_value"] = Math.Round(r.BaselineValue, 4), ["ratio"] = Math.Round(r.Ratio, 4),
    });
    Console.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
}
else
{
    Console.WriteLine($"{"scenario",-38} {"metric",-8} {"value",14} {"unit",-8} {"baseline",-26} {"baseline_value",14} {"ratio",8}");
    foreach (var r in results)
    {
        Console.WriteLine($"{r.Scenario,-38} {r.Metric,-8} {r.Value,14:F3} {r.Unit,-8} {r.Baseline,-26} {r.BaselineValue,14:F3} {r.Ratio,8:F4}");
    }
}

return 0;
