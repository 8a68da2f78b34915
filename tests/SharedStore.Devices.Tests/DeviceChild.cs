using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text;
using SharedStore.Devices;

namespace SharedStore.Devices.Tests;

/// <summary>
/// The test assembly doubles as the child process of the cross-process device tests (its own entry point instead
/// of the test SDK's empty one): <c>dotnet SharedStore.Devices.Tests.dll ROLE ARGS</c>. A real second process is
/// what a kill -9 test needs; one file keeps the child beside the tests that drive it.
/// </summary>
[SupportedOSPlatform("linux")]
internal static class DeviceChild
{
    public static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "temporary-device")
        {
            return HoldTemporaryDevice(args[1]);
        }

        Console.Error.WriteLine("usage: SharedStore.Devices.Tests.dll temporary-device PATH");
        return 2;
    }

    /// <summary>Starts this assembly as a child with <paramref name="args"/>; stdout lines go to <paramref name="onStdout"/>.</summary>
    public static Process Start(IReadOnlyList<string> args, StringBuilder stderr, Action<string> onStdout)
    {
        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { } h && File.Exists(h) ? h : "dotnet";
        var psi = new ProcessStartInfo(host)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add(typeof(DeviceChild).Assembly.Location);
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                onStdout(e.Data);
            }
        };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stderr)
                {
                    stderr.AppendLine(e.Data);
                }
            }
        };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Opens a temporary device at <paramref name="path"/>, writes 1 MiB through a scheduler, prints
    /// "ready FD" and waits for stdin to close (the test kills it first).</summary>
    private static int HoldTemporaryDevice(string path)
    {
        using var device = new RandomAccessFileDevice(path, DeviceMode.Temporary);
        using var scheduler = new ThreadPoolScheduler(1);
        byte[] data = new byte[1 << 20];
        data.AsSpan().Fill(0x5A);
        scheduler.WriteAsync(device, 0, data).AsTask().Wait(TimeSpan.FromSeconds(30));
        device.Flush();
        Console.WriteLine($"ready {device.FileHandle!.Fd}");
        Console.Out.Flush();
        _ = Console.In.ReadToEnd();
        return 0;
    }
}
