using System.Globalization;

namespace SharedStore.Diagnostics;

/// <summary>The processes a process started, read from /proc (children, grandchildren...). A broker started by a
/// client calls setsid() but stays that client's child, so it is found too.</summary>
public static class ProcessTree
{
    /// <summary>Every live descendant of <paramref name="root"/>, parents before their children.</summary>
    public static List<int> Descendants(int root)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            int ppid = ParentOf(pid);
            if (ppid > 0)
            {
                if (!children.TryGetValue(ppid, out var list))
                {
                    children[ppid] = list = [];
                }

                list.Add(pid);
            }
        }

        var result = new List<int>();
        var queue = new Queue<int>();
        queue.Enqueue(root);
        while (queue.Count > 0)
        {
            int p = queue.Dequeue();
            if (children.TryGetValue(p, out var list))
            {
                foreach (int c in list)
                {
                    result.Add(c);
                    queue.Enqueue(c);
                }
            }
        }

        return result;
    }

    /// <summary>The parent pid from /proc/PID/stat, 0 when the process is gone.</summary>
    public static int ParentOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string[] f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(f[1], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }

    /// <summary>Whether the process is a .NET process (it maps libcoreclr).</summary>
    public static bool IsDotnet(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/maps"))
            {
                if (line.EndsWith("libcoreclr.so", StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return false;
    }
}
