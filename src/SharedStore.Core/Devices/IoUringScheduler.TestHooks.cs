namespace SharedStore.Devices;

/// <summary>Test-only view: the completion-batching policy, so the bench's probe can compare the adaptive policy
/// with the fixed quarter-batch it replaced and with no batching (tools/SharedStore.Bench/Devices/investigate-seqwrite.sh).</summary>
public sealed partial class IoUringScheduler
{
    internal enum CompletionBatching
    {
        /// <summary>A quarter of the operations in flight, capped by the completions expected within the wait.</summary>
        Adaptive,

        /// <summary>A quarter of the operations in flight (before issue 19).</summary>
        Fixed,

        /// <summary>Wake for every completion.</summary>
        None,
    }

    internal CompletionBatching Batching { get; set; } = CompletionBatching.Adaptive;
}
