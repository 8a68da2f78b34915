using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace SharedStore.TestClient;

/// <summary>The commands and the state they share (one client, one current container, joined objects, held leases).</summary>
internal sealed unsafe class Commands
{
    private readonly StreamWriter _out;
    private readonly ConcurrentDictionary<string, SharedObject> _objects = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<int, ObjectLease> _leases = new();
    private readonly List<(SharedStoreClient Client, Container? Container)> _extraClients = [];
    private SharedStoreClient? _client;
    private Container? _container;
    private int _nextLease;
    private readonly AsyncCommands _async;
    private readonly FileCommands _files = new();
    private readonly LockCommands _locks;
    private readonly List<Protocol.SeqPacketSocket> _flood = [];
    private readonly HostileCommands _hostile = new();
    private readonly VersionCommands _versions;

    public Commands(Stream stdout)
    {
        _out = new StreamWriter(stdout) { AutoFlush = true, NewLine = "\n" };
        _async = new AsyncCommands(this);
        _locks = new LockCommands(this);
        _versions = new VersionCommands(this);
    }

    internal SharedStoreClient Client => _client ?? throw new InvalidOperationException("not connected");

    private Container Container => _container ?? throw new InvalidOperationException("no current container");

    public void Answer(int seq, string text)
    {
        text = text.Replace('\n', ' ').Replace('\r', ' ');
        lock (_out)
        {
            _out.WriteLine($"{seq} {text}");
        }
    }

    public void Shutdown()
    {
        lock (_out)
        {
            _out.Flush();
        }

        _client?.Dispose();
        _hostile.Dispose();
        DropExtraClients();
    }

    private void DropExtraClients()
    {
        lock (_extraClients)
        {
            foreach (var (client, container) in _extraClients)
            {
                container?.Leave(); // a round trip: the slot is free when this returns
                client.Dispose();
            }

            _extraClients.Clear();
        }
    }

    public void Run(int seq, string[] a)
    {
        string answer;
        try
        {
            answer = Execute(a);
        }
        catch (SharedStoreException e)
        {
            answer = $"err {e.Code} {e.Message}";
        }
        catch (Exception e)
        {
            answer = $"err {e.GetType().Name} {e.Message}";
        }

        Answer(seq, answer);
    }

    internal static long L(string s) => long.Parse(s, CultureInfo.InvariantCulture);

    internal static int I(string s) => int.Parse(s, CultureInfo.InvariantCulture);

    internal static TimeSpan Ms(string s) => TimeSpan.FromMilliseconds(L(s));

    internal SharedObject Obj(string name) => _objects.TryGetValue(name, out var o) ? o : throw new KeyNotFoundException($"object '{name}' is not joined by this client");

    private string Execute(string[] a)
    {
        switch (a[0])
        {
            case "flood":
            {
                // flood SOCKET N: opens N raw connections that never say hello and holds them (issue 13, finding 6).
                // Answers how many connect() calls succeeded; flood-release closes them all.
                int n = I(a[2]), opened = 0, failed = 0;
                for (int i = 0; i < n; i++)
                {
                    var sock = Protocol.SeqPacketSocket.TryConnect(a[1], out _);
                    if (sock is null)
                    {
                        failed++;
                        continue;
                    }

                    _flood.Add(sock);
                    opened++;
                }

                return $"ok opened={opened} failed={failed}";
            }

            case "flood-check":
            {
                // flood-check: how many of the flood's connections the broker has closed (a read sees EOF).
                int closed = 0;
                foreach (var sock in _flood)
                {
                    if (sock.PeerClosed())
                    {
                        closed++;
                    }
                }

                return $"ok open={_flood.Count - closed} closed={closed}";
            }

            case "flood-release":
            {
                foreach (var sock in _flood)
                {
                    sock.Dispose();
                }

                int n = _flood.Count;
                _flood.Clear();
                return $"ok closed={n}";
            }

            case "disconnect":
                // disconnect: disposes the client (leases stay in the table: leaseread/put still work on them).
                Client.Dispose();
                _client = null;
                _container = null;
                _objects.Clear();
                return "ok";

            case "pid":
                return $"ok {Environment.ProcessId}";

            case "wait-broker-lost":
            {
                // wait-broker-lost MS: returns once the client has seen its broker connection close (its receiver read
                // EOF), so that a test's next call meets a client that knows, not a race with the receiver.
                var sw = Stopwatch.StartNew();
                while (!Client.IsBrokerLost)
                {
                    if (sw.Elapsed > Ms(a[1]))
                    {
                        throw new TimeoutException($"the client did not see its broker connection close within {a[1]} ms");
                    }

                    Thread.Sleep(1);
                }

                return $"ok {sw.Elapsed.TotalMilliseconds:F0}";
            }

            case "connect":
            {
                // connect SOCKET [slots=N] [staging=BYTES] [full=wait|fail] [submit-timeout=MS] [write-path=client|broker]:
                // the async options.
                var opts = new SharedStoreClientOptions { SocketPath = a[1], ClientName = $"testclient-{Environment.ProcessId}" };
                foreach (string kv in a.Skip(2))
                {
                    string[] p = kv.Split('=', 2);
                    switch (p[0])
                    {
                        case "slots": opts.AsyncRingSlots = I(p[1]); break;
                        case "staging": opts.AsyncStagingBytes = L(p[1]); break;
                        case "full": opts.AsyncFullMode = p[1] == "fail" ? AsyncFullMode.Fail : AsyncFullMode.Wait; break;
                        case "submit-timeout": opts.AsyncSubmitTimeout = Ms(p[1]); break;
                        case "write-path": opts.AsyncWritePath = p[1] == "broker" ? AsyncWritePath.Broker : AsyncWritePath.Client; break;
                        case "spin-us": opts.LockSpin = TimeSpan.FromMicroseconds(L(p[1])); break;
                        case "slice-ms": opts.TestSleepSlice = Ms(p[1]); break;
                        default: throw new NotSupportedException($"unknown connect option '{kv}'");
                    }
                }

                _client = SharedStoreClient.Connect(opts);
                return $"ok {_client.BrokerPid}";
            }

            case "create-container":
            {
                // create-container NAME GROUP [creator-only] [durable=PATH] [BLOCKSIZE]
                var opts = new ContainerOptions();
                foreach (string extra in a.Skip(3))
                {
                    if (extra == "creator-only")
                    {
                        opts.WritePolicy = WritePolicy.CreatorOnly;
                    }
                    else if (extra.StartsWith("durable=", StringComparison.Ordinal))
                    {
                        opts.DurablePath = extra["durable=".Length..];
                    }
                    else
                    {
                        opts.BlockSize = I(extra);
                    }
                }

                _container = Client.CreateContainer(a[1], L(a[2]), opts);
                return $"ok {_container.Id}";
            }

            case "flush":
                // flush TIMEOUTMS: container_flush of the current container.
                Container.Flush(Ms(a[1]));
                return "ok";

            case "join-container":
                _container = Client.JoinContainer(a[1]);
                return $"ok {_container.Id} canwrite={(_container.CanWrite ? 1 : 0)}";

            case "join-container-when":
                // join-container-when NAME TIMEOUTMS: the seed's reader loop, while ((con = container_join(NAME)) < 0);
                _container = Client.JoinContainerWhenCreated(a[1], Ms(a[2]));
                return $"ok {_container.Id}";

            case "wait-container":
            {
                // wait-container NAME TIMEOUTMS [CANCELMS] → ok ID ELAPSEDMS: WaitForContainer (pushed by the broker, no
                // polling), its token canceled after CANCELMS.
                using var cts = new CancellationTokenSource();
                if (a.Length > 3)
                {
                    cts.CancelAfter(Ms(a[3]));
                }

                var sw = Stopwatch.StartNew();
                _container = Client.WaitForContainer(a[1], Ms(a[2]), cts.Token);
                return $"ok {_container.Id} {sw.ElapsedMilliseconds}";
            }

            case "wait-object":
            {
                // wait-object NAME TIMEOUTMS → ok ID ELAPSEDMS: WaitForObject in the current container.
                var sw = Stopwatch.StartNew();
                var o = Container.WaitForObject(a[1], Ms(a[2]));
                _objects[a[1]] = o;
                return $"ok {o.Id} {sw.ElapsedMilliseconds}";
            }

            case "leave-container":
                Container.Leave();
                _objects.Clear();
                return "ok";

            case "destroy-container":
            {
                var sw = Stopwatch.StartNew();
                Container.Destroy(Ms(a[1]));
                _objects.Clear();
                return $"ok {sw.ElapsedMilliseconds}";
            }

            case "create-object":
            {
                var o = Container.CreateObject(a[1], L(a[2]));
                _objects[a[1]] = o;
                return $"ok {o.Id}";
            }

            case "join-object":
            {
                var o = Container.JoinObject(a[1]);
                _objects[a[1]] = o;
                return $"ok {o.Id} size={o.Size}";
            }

            case "leave-object":
                Obj(a[1]).Leave();
                _objects.TryRemove(a[1], out _);
                return "ok";

            case "destroy-object":
            {
                var sw = Stopwatch.StartNew();
                Obj(a[1]).Destroy(Ms(a[2]));
                _objects.TryRemove(a[1], out _);
                return $"ok {sw.ElapsedMilliseconds}";
            }

            case "get":
            {
                var lease = Obj(a[1]).Get(L(a[2]), L(a[3]), Ms(a[4]));
                int id = Interlocked.Increment(ref _nextLease);
                _leases[id] = lease;
                int first = lease.Length > 0 ? lease.Pointer[0] : -1;
                return $"ok {id} torn={(lease.Torn ? 1 : 0)} first={first}";
            }

            case "put":
            {
                if (!_leases.TryRemove(I(a[1]), out var lease))
                {
                    throw new KeyNotFoundException($"no lease {a[1]}");
                }

                lease.Dispose();
                return "ok";
            }

            case "put-twice":
            {
                if (!_leases.TryRemove(I(a[1]), out var lease))
                {
                    throw new KeyNotFoundException($"no lease {a[1]}");
                }

                lease.Dispose();
                lease.Dispose(); // must throw InvalidOperationException
                return "ok";
            }

            case "leaseread":
            {
                var lease = _leases.TryGetValue(I(a[1]), out var l) ? l : throw new KeyNotFoundException($"no lease {a[1]}");
                return $"ok {Payload.Format(Payload.Checksum(lease.Pointer, lease.Length))}";
            }

            case "write":
            {
                byte[] data = new byte[I(a[3])];
                data.AsSpan().Fill((byte)I(a[4]));
                Obj(a[1]).Write(L(a[2]), data, Ms(a[5]));
                return "ok";
            }

            case "write-pattern":
            {
                // write-pattern NAME OFFSET SIZE SEED TIMEOUTMS: the Payload pattern of SEED from position 0.
                byte[] data = new byte[I(a[3])];
                Payload.Fill(data, 0, ulong.Parse(a[4], CultureInfo.InvariantCulture));
                Obj(a[1]).Write(L(a[2]), data, Ms(a[5]));
                return $"ok {Payload.Format(Payload.Checksum(data))}";
            }

            case "read":
            {
                using var lease = Obj(a[1]).Get(L(a[2]), L(a[3]), TimeSpan.FromSeconds(30));
                return $"ok {Payload.Format(Payload.Checksum(lease.Pointer, lease.Length))}";
            }

            case "create-many":
            {
                // create-many PREFIX COUNT SIZE: objects PREFIX0…PREFIX{COUNT-1}, each stamped with its index at 0.
                int count = I(a[2]);
                long size = L(a[3]);
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < count; i++)
                {
                    var o = Container.CreateObject(a[1] + i.ToString(CultureInfo.InvariantCulture), size);
                    o.Write(0, BitConverter.GetBytes(i), TimeSpan.FromSeconds(30));
                }

                return $"ok {sw.ElapsedMilliseconds}";
            }

            case "join-many":
            {
                // join-many PREFIX INDEX…: joins each, checks its stamp, leaves it.
                var sw = Stopwatch.StartNew();
                foreach (string s in a.Skip(2))
                {
                    int i = I(s);
                    using var o = Container.JoinObject(a[1] + s);
                    int stamp;
                    using (var lease = o.Get(0, 4, TimeSpan.FromSeconds(30)))
                    {
                        stamp = BitConverter.ToInt32(lease.ReadOnlySpan);
                    }

                    if (stamp != i)
                    {
                        return $"err Mismatch object {a[1]}{s} holds stamp {stamp}";
                    }
                }

                return $"ok {sw.ElapsedMilliseconds}";
            }

            case "extra-joins":
            {
                // extra-joins NAME COUNT: COUNT more connections of this process each join container NAME (each is a
                // member of its own); answers the number joined, or the first failure.
                int count = I(a[2]);
                for (int i = 0; i < count; i++)
                {
                    var c = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = Client.SocketPath });
                    try
                    {
                        var joined = c.JoinContainer(a[1]);
                        lock (_extraClients)
                        {
                            _extraClients.Add((c, joined));
                        }
                    }
                    catch
                    {
                        c.Dispose();
                        throw;
                    }
                }

                return $"ok {count}";
            }

            case "drop-extra":
                DropExtraClients();
                return "ok";

            default:
                return _async.Execute(a) ?? _files.Execute(a) ?? _locks.Execute(a) ?? _hostile.Execute(a) ?? _versions.Execute(a) ?? throw new NotSupportedException($"unknown command '{a[0]}'");
        }
    }
}
