using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using SharedStore;
using SharedStore.TestClient;

// A scriptable SharedStore client process for the cross-process tests. One command per stdin line; each command N
// (1-based) is answered by exactly one stdout line "N ok [values…]" or "N err CODE message", where CODE is the
// ErrorCode name of a SharedStoreException or the .NET exception type name. Every command but put/put-twice/exit runs
// on its own thread, so a blocked write does not stop the next command from being read. See Commands for the list.
if (args is ["attack-fd", ..])
{
    return HostileCommands.RunChild(args); // the child of attack-pass: attacks a descriptor it inherited
}

var commands = new Commands(Console.OpenStandardOutput());
int seq = 0;
string? line;
while ((line = Console.In.ReadLine()) != null)
{
    int n = ++seq;
    string[] argv = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
    if (argv.Length == 0)
    {
        commands.Answer(n, "err InvalidArgument empty command");
        continue;
    }

    if (argv[0] == "exit")
    {
        commands.Answer(n, "ok");
        commands.Shutdown();
        return 0;
    }

    if (argv[0] is "put" or "put-twice")
    {
        commands.Run(n, argv);
    }
    else
    {
        var t = new Thread(() => commands.Run(n, argv)) { IsBackground = true, Name = $"cmd-{n}" };
        t.Start();
    }
}

commands.Shutdown();
return 0;
