using System.Diagnostics;
using System.Globalization;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.TestClient;

/// <summary>
/// Commands for object versions and waits (issue 17).
/// <list type="bullet">
/// <item><c>version OBJ</c> → <c>ok V</c></item>
/// <item><c>sleepers OBJ</c> → <c>ok 0|1</c>: the sleepers bit of the object's version word (a waiter sleeps)</item>
/// <item><c>wait-change OBJ LAST TIMEOUTMS [CANCELMS]</c> → <c>ok V</c>: WaitForChange (canceled after CANCELMS)</item>
/// <item><c>changed OBJ SINCE</c> → <c>ok B,B,…</c> (or <c>ok -</c>): ChangedBlocksSince</item>
/// <item><c>lease-version OBJ OFFSET SIZE</c> → <c>ok version=V torn=0|1 sum=CHECKSUM</c>: a get, read, put</item>
/// <item><c>write-loop OBJ SIZE</c>: writes the Payload pattern of seed Version+1 over [0, SIZE) for ever (until
/// killed), so a complete write of version V holds pattern V; answers nothing</item>
/// <item><c>pingpong OBJ ROUNDS PARITY TIMEOUTMS</c> → <c>ok LASTVERSION</c>: writes when the version seen has parity
/// PARITY, then waits for the other side's write, until version ROUNDS; fails on a version that goes back or a wait
/// that times out</item>
/// <item><c>changes OBJ COUNT TIMEOUTMS</c> → <c>ok V1,V2…</c>: the first COUNT versions of <c>await foreach Changes</c></item>
/// <item><c>name-waits</c> → <c>ok N</c>: the broker's waits for names right now (status)</item>
/// </list>
/// </summary>
internal sealed class VersionCommands(Commands commands)
{
    public string? Execute(string[] a)
    {
        switch (a[0])
        {
            case "version":
                return $"ok {commands.Obj(a[1]).Version}";

            case "sleepers":
            {
                return $"ok {VersionWord(commands.Obj(a[1])) & ObjectVersionDescriptor.SleepersBit}";
            }

            case "wait-change":
            {
                using var cts = new CancellationTokenSource();
                if (a.Length > 4)
                {
                    cts.CancelAfter(Commands.Ms(a[4]));
                }

                long v = commands.Obj(a[1]).WaitForChange(Commands.L(a[2]), Commands.Ms(a[3]), cts.Token);
                return $"ok {v}";
            }

            case "changed":
            {
                var blocks = commands.Obj(a[1]).ChangedBlocksSince(Commands.L(a[2]));
                return blocks.Count == 0 ? "ok -" : $"ok {string.Join(',', blocks)}";
            }

            case "lease-version":
            {
                return LeaseVersion(commands.Obj(a[1]), Commands.L(a[2]), Commands.L(a[3]));
            }

            case "write-loop":
            {
                var o = commands.Obj(a[1]);
                byte[] data = new byte[Commands.I(a[2])];
                while (true)
                {
                    Payload.Fill(data, 0, (ulong)(o.Version + 1)); // the only writer: this write becomes that version
                    o.Write(0, data, TimeSpan.FromSeconds(30));
                }
            }

            case "pingpong":
            {
                // Turns: write when the version seen has our parity (the other side wrote last), then wait for the
                // other side's write, until the version reaches ROUNDS.
                var o = commands.Obj(a[1]);
                long target = Commands.L(a[2]);
                long parity = Commands.L(a[3]);
                TimeSpan timeout = Commands.Ms(a[4]);
                byte[] one = [1];
                long seen = o.Version;
                while (seen < target)
                {
                    if ((seen & 1) == parity)
                    {
                        o.Write(0, one, timeout);
                        seen++; // our write's version (the other side writes only after seeing it)
                        if (seen >= target)
                        {
                            break;
                        }
                    }

                    long v = o.WaitForChange(seen, timeout);
                    if (v < seen)
                    {
                        return $"err Internal version went back from {seen} to {v}";
                    }

                    seen = v;
                }

                return $"ok {seen}";
            }

            case "changes":
            {
                var o = commands.Obj(a[1]);
                int count = Commands.I(a[2]);
                using var cts = new CancellationTokenSource(Commands.Ms(a[3]));
                var seen = new List<long>();
                var t = Task.Run(async () =>
                {
                    await foreach (long v in o.Changes(cts.Token))
                    {
                        seen.Add(v);
                        if (seen.Count == count)
                        {
                            break;
                        }
                    }
                });
                t.GetAwaiter().GetResult();
                return $"ok {string.Join(',', seen)}";
            }

            case "name-waits":
            {
                var r = commands.Client.Call(new Request { Status = new StatusRequest() }, TimeSpan.FromSeconds(30), default);
                return $"ok {r.Response.Status.NameWaits}";
            }

            default:
                return null;
        }
    }

    private static unsafe long VersionWord(SharedObject o) =>
        Volatile.Read(ref *(long*)((byte*)o.LockRecords + ObjectVersionDescriptor.VersionWordOffset));

    private static unsafe string LeaseVersion(SharedObject o, long offset, long size)
    {
        using var lease = o.Get(offset, size, TimeSpan.FromSeconds(30));
        return $"ok version={lease.Version} torn={(lease.Torn ? 1 : 0)} sum={Payload.Format(Payload.Checksum(lease.Pointer, lease.Length))}";
    }
}
