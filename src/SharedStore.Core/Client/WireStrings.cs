using System.Runtime.CompilerServices;

namespace SharedStore;

/// <summary>
/// Strings the library sends to the broker (names, durable paths, the client name) travel as UTF-8, and the broker
/// refuses any that is not valid UTF-8 (docs/ARCHITECTURE.md §6). A .NET string with a lone surrogate has no UTF-8
/// form: protobuf's encoder would write U+FFFD in its place, so a name other than the caller's would reach the broker
/// (<c>"Z\uD800"</c> would create <c>"Z\uFFFD"</c>). Such a string is the caller's mistake, refused before anything is sent.
/// </summary>
internal static class WireStrings
{
    /// <exception cref="ArgumentException"><paramref name="value"/> holds a lone (unpaired) surrogate.</exception>
    public static void ThrowIfNotValidUtf16(string? value, [CallerArgumentExpression(nameof(value))] string? paramName = null)
    {
        if (value is not null && IndexOfLoneSurrogate(value) is int i and >= 0)
        {
            throw new ArgumentException(
                $"the string holds a lone surrogate U+{(int)value[i]:X4} at index {i}: it has no UTF-8 form, and the broker takes names as UTF-8", paramName);
        }
    }

    /// <summary>Index of the first surrogate that is not half of a high-low pair, or -1.</summary>
    public static int IndexOfLoneSurrogate(ReadOnlySpan<char> s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (!char.IsSurrogate(s[i]))
            {
                continue;
            }

            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                i++;
                continue;
            }

            return i;
        }

        return -1;
    }
}
