using System.Diagnostics;

namespace SharedStore.Async;

/// <summary>A point in <see cref="Stopwatch"/> time by which a wait must end, or none (an infinite timeout). One
/// budget can then be shared by consecutive waits: each gets what is left, not the whole timeout again.</summary>
internal readonly struct Deadline
{
    private readonly long _ticks; // Stopwatch ticks; long.MaxValue: none

    private Deadline(long ticks) => _ticks = ticks;

    /// <summary>Whether there is a deadline at all.</summary>
    public bool IsInfinite => _ticks == long.MaxValue;

    /// <summary>Stopwatch ticks at which it passes (<see cref="long.MaxValue"/> when infinite).</summary>
    public long Ticks => _ticks;

    /// <summary>What is left: zero once passed, <see cref="Timeout.InfiniteTimeSpan"/> when infinite.</summary>
    public TimeSpan Remaining =>
        IsInfinite ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(Math.Max(0, _ticks - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency);

    /// <summary><paramref name="timeout"/> from now (<see cref="Timeout.InfiniteTimeSpan"/>: none).</summary>
    public static Deadline After(TimeSpan timeout) => new(TicksAfter(Stopwatch.GetTimestamp(), timeout));

    /// <summary>The deadline <paramref name="timeout"/> after Stopwatch time <paramref name="start"/>.</summary>
    public static long TicksAfter(long start, TimeSpan timeout) =>
        timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : start + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
}
