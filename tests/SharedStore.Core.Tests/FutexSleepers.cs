using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace SharedStore.Core.Tests;

/// <summary>
/// Observes, from the kernel's side, which threads of this process sleep in FUTEX_WAIT on a word: a test that needs
/// "the other thread is asleep now" reads it here instead of sleeping and hoping. <c>/proc/self/task/TID/syscall</c>
/// shows the system call a blocked thread is in and its arguments (number, then uaddr, op, val in hex; see proc(5)).
/// A thread counts only if it waits for the word's current value: a sleeper that a waker has already bumped the word
/// past (woken, not yet scheduled) still shows the call, but with an old value, and is not counted.
/// </summary>
internal static unsafe class FutexSleepers
{
    // futex(2)'s number: 202 on x86-64, 98 on arm64 (asm/unistd.h).
    private static readonly string s_futex = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => "202",
        Architecture.Arm64 => "98",
        _ => throw new PlatformNotSupportedException($"futex syscall number unknown for {RuntimeInformation.ProcessArchitecture}"),
    };

    /// <summary>How many threads of this process sleep in FUTEX_WAIT on <paramref name="word"/> for its current value.</summary>
    public static int Count(int* word)
    {
        int current = Volatile.Read(ref *word);
        int n = 0;
        foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            string line;
            try
            {
                line = File.ReadAllText(Path.Combine(task, "syscall"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // the thread exited meanwhile
            }

            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length > 3 && f[0] == s_futex
                && ulong.Parse(f[1].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture) == (ulong)word
                && (int)ulong.Parse(f[3].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture) == current)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>Waits until at least <paramref name="threads"/> threads sleep on <paramref name="word"/> (see
    /// <see cref="Count"/>); fails the test after 10 s.</summary>
    public static void WaitFor(int* word, int threads, string what)
    {
        var sw = Stopwatch.StartNew();
        while (Count(word) < threads)
        {
            Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), $"timed out waiting for {what}");
            Thread.Sleep(1);
        }
    }
}
