using System.Diagnostics;
using System.Globalization;

namespace SharedStore.FirstRun.Tests;

/// <summary>Folder facts the tests check, read with stat(1) so the tests share no code with what they check.</summary>
internal static class Folders
{
    public static uint Owner(string path) => uint.Parse(Stat("%u", path), CultureInfo.InvariantCulture);

    public static int Mode(string path) => Convert.ToInt32(Stat("%a", path), 8);

    private static string Stat(string format, string path)
    {
        var psi = new ProcessStartInfo("/usr/bin/stat") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(format);
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        string s = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit(10_000);
        Assert.That(p.ExitCode, Is.Zero, $"stat {path}: {p.StandardError.ReadToEnd()}");
        return s;
    }
}
