namespace SharedStore.Bench;

internal static partial class ScenarioRegistry
{
    private static partial IEnumerable<IScenario> DeviceScenarios() => [];
}
