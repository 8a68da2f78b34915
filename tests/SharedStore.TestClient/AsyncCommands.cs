using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace SharedStore.TestClient;

/// <summary>
/// The asynchronous-path commands (object_awrite, opstatus, opcancel, opreturn). Operations are kept by id (their
/// ring position) so later commands can query them. Payloads are <see cref="Payload"/> patterns of a seed, from
/// position 0, so a test computes the same bytes.
/// <list type="bullet">
/// <item><c>open-async</c> → <c>ok slots=N inline=N maxchunk=N staging=N</c> (opens the channel)</item>
/// <item><c>awrite OBJ OFFSET LEN SEED</c> → <c>ok ID status=STATUS</c></item>
/// <item><c>awrite-seq OBJ COUNT OFFSET STEP LEN SEED0</c> → <c>ok FIRSTID LASTID</c>: write i at OFFSET + i×STEP with
/// seed SEED0 + i, all submitted before the answer, none waited for</item>
/// <item><c>opstatus ID</c> → <c>ok STATUS RESULT</c> (RESULT is '-' while in progress)</item>
/// <item><c>opcancel ID</c> → <c>ok 1</c> (canceled) or <c>ok 0</c></item>
/// <item><c>await ID TIMEOUTMS</c> → <c>ok STATUS RESULT</c>, or <c>err Timeout</c></item>
/// <item><c>cancel-rounds OBJ ROUNDS OFFSET LEN SEED0 MAXDELAYUS</c> → <c>ok OUTCOMES</c>: per round i an awrite at
/// OFFSET + i×LEN (seed SEED0 + i), a random 0…MAXDELAYUS µs spin, opcancel, then a wait; one letter per round, C
/// (canceled) or D (done). Answers <c>err Violation …</c> when opcancel's answer disagrees with the final status.</item>
/// <item><c>claim-no-publish OBJ OFFSET LEN SEED</c>: claims a ring slot and fills it without publishing (the
/// process is about to be killed; its submissions stay blocked)</item>
/// <item><c>aread OBJ OFFSET LEN TIMEOUTMS</c> → <c>ok CHECKSUM</c></item>
/// <item><c>wait-async TIMEOUTMS</c> → <c>ok</c> once every submitted operation finished, or <c>err Timeout</c></item>
/// </list>
/// </summary>
internal sealed class AsyncCommands(Commands commands)
{
    private static readonly TimeSpan s_roundTimeout = TimeSpan.FromSeconds(10);
    private readonly ConcurrentDictionary<long, AsyncOperation> _ops = new();

    /// <summary>Runs an asynchronous-path command; null when <paramref name="a"/> is not one.</summary>
    public string? Execute(string[] a)
    {
        switch (a[0])
        {
            case "open-async":
            {
                var ch = commands.Client.Live().Channel;
                return $"ok slots={ch.SlotCount} inline={ch.InlineMax} maxchunk={ch.MaxChunk} staging={ch.StagingSize}";
            }

            case "awrite":
            {
                var op = commands.Obj(a[1]).AWrite(Commands.L(a[2]), Pattern(Commands.I(a[3]), a[4]));
                _ops[op.Id] = op;
                return $"ok {op.Id} status={op.Status}";
            }

            case "awrite-seq":
            {
                var obj = commands.Obj(a[1]);
                int count = Commands.I(a[2]);
                long offset = Commands.L(a[3]), step = Commands.L(a[4]);
                int len = Commands.I(a[5]);
                ulong seed0 = ulong.Parse(a[6], CultureInfo.InvariantCulture);
                long first = -1, last = -1;
                for (int i = 0; i < count; i++)
                {
                    byte[] data = new byte[len];
                    Payload.Fill(data, 0, seed0 + (ulong)i);
                    var op = obj.AWrite(offset + (i * step), data);
                    if (op.Status == AsyncStatus.Failed)
                    {
                        return $"err {op.Error} write {i} of the sequence failed at submission";
                    }

                    _ops[op.Id] = op;
                    first = first < 0 ? op.Id : first;
                    last = op.Id;
                }

                return $"ok {first} {last}";
            }

            case "opstatus":
            {
                var op = Op(a[1]);
                AsyncStatus s = op.Status;
                return s == AsyncStatus.InProgress ? $"ok {s} -" : $"ok {s} {op.Result}";
            }

            case "opcancel":
                return Op(a[1]).Cancel() ? "ok 1" : "ok 0";

            case "await":
            {
                var op = Op(a[1]);
                if (!op.Wait(Commands.Ms(a[2])))
                {
                    return $"err Timeout operation {op.Id} still in progress";
                }

                return $"ok {op.Status} {op.Result}";
            }

            case "cancel-rounds":
                return CancelRounds(commands.Obj(a[1]), Commands.I(a[2]), Commands.L(a[3]), Commands.I(a[4]), ulong.Parse(a[5], CultureInfo.InvariantCulture), Commands.I(a[6]));

            case "claim-no-publish":
                commands.Client.Live().Channel.TestClaimWithoutPublish(commands.Obj(a[1]), Commands.L(a[2]), Pattern(Commands.I(a[3]), a[4]));
                return "ok";

            case "aread":
            {
                byte[] buffer = new byte[Commands.I(a[3])];
                var op = commands.Obj(a[1]).ARead(Commands.L(a[2]), buffer);
                if (!op.Wait(Commands.Ms(a[4])))
                {
                    return $"err Timeout aread {op.Id} still in progress";
                }

                return op.Status == AsyncStatus.Completed ? $"ok {Payload.Format(Payload.Checksum(buffer))}" : $"err {op.Error} aread {op.Status}";
            }

            case "wait-async":
                return commands.Client.WaitForAsyncOperations(Commands.Ms(a[1])) ? "ok" : "err Timeout operations still in progress";

            default:
                return null;
        }
    }

    private AsyncOperation Op(string id) =>
        _ops.TryGetValue(Commands.L(id), out var op) ? op : throw new KeyNotFoundException($"no operation {id}");

    private static byte[] Pattern(int length, string seed)
    {
        byte[] data = new byte[length];
        Payload.Fill(data, 0, ulong.Parse(seed, CultureInfo.InvariantCulture));
        return data;
    }

    private static string CancelRounds(SharedObject obj, int rounds, long offset, int len, ulong seed0, int maxDelayUs)
    {
        var outcomes = new char[rounds];
        var rng = new Random(unchecked((int)seed0));
        byte[] data = new byte[len];
        for (int i = 0; i < rounds; i++)
        {
            Payload.Fill(data, 0, seed0 + (ulong)i);
            var op = obj.AWrite(offset + ((long)i * len), data);
            long spinTicks = rng.Next(maxDelayUs + 1) * Stopwatch.Frequency / 1_000_000;
            long start = Stopwatch.GetTimestamp();
            while (Stopwatch.GetTimestamp() - start < spinTicks)
            {
                Thread.SpinWait(10);
            }

            bool canceled = op.Cancel();
            if (!op.Wait(s_roundTimeout))
            {
                return $"err Timeout round {i}: operation {op.Id} still in progress after {s_roundTimeout}";
            }

            AsyncStatus s = op.Status;
            bool consistent = s switch
            {
                AsyncStatus.Canceled => canceled && op.Result == -(long)ErrorCode.Canceled && op.Error == ErrorCode.Canceled,
                AsyncStatus.Completed => !canceled && op.Result == len,
                _ => false,
            };
            if (!consistent)
            {
                return $"err Violation round {i}: opcancel answered {canceled} but the operation ended {s} (result {op.Result})";
            }

            outcomes[i] = s == AsyncStatus.Canceled ? 'C' : 'D';
        }

        return $"ok {new string(outcomes)}";
    }
}
