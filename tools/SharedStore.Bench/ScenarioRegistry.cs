namespace SharedStore.Bench;

/// <summary>Every scenario the tool knows. Each subsystem contributes its list from its own folder.</summary>
internal static partial class ScenarioRegistry
{
    public static IEnumerable<IScenario> All =>
        CoreScenarios().Concat(AsyncScenarios()).Concat(DurableScenarios()).Concat(DeviceScenarios()).Concat(NativeScenarios()).Concat(WaitScenarios()).Concat(ManyMembersScenarios()).Concat(NatsScenarios()).Concat(FailoverScenarios());

    // Filled in by Scenarios/*.cs; a subsystem without scenarios yet returns none.
    private static partial IEnumerable<IScenario> CoreScenarios();

    private static partial IEnumerable<IScenario> DeviceScenarios();
}
