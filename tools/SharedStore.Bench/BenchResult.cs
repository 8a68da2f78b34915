namespace SharedStore.Bench;

/// <summary>One measured figure and the baseline measured beside it in the same run.
/// <c>Ratio = Value / BaselineValue</c>; whether higher or lower is better depends on the metric.</summary>
internal sealed record BenchResult(
    string Scenario,
    string Metric,
    string Unit,
    double Value,
    string Baseline,
    double BaselineValue)
{
    public double Ratio => BaselineValue == 0 ? double.NaN : Value / BaselineValue;
}

/// <summary>A named scenario of the bench tool. Scenarios run real processes where the figure is about
/// processes; each one measures its own baseline in the same invocation, because these machines are shared and
/// noisy and only ratios are comparable across runs.</summary>
internal interface IScenario
{
    string Name { get; }

    string Description { get; }

    IReadOnlyList<BenchResult> Run(BenchContext context);
}

/// <summary>Options every scenario sees.</summary>
internal sealed class BenchContext
{
    /// <summary>Scale factor for iteration counts (1 = default; smaller for a quick smoke run).</summary>
    public double Scale { get; init; } = 1.0;

    /// <summary>Directory for scratch files (device files, sockets). Created by the tool, removed at exit.</summary>
    public required string WorkDirectory { get; init; }

    public TextWriter Log { get; init; } = Console.Error;
}
