using System.Runtime.InteropServices;

namespace SharedStore.Native;

/// <summary>
/// The library's broker connection, made on the first call that needs one (container_create, container_join) rather
/// than at load time, so loading the library never blocks or fails. It goes to <c>$SHAREDSTORE_SOCKET</c> or the
/// per-user default socket (<see cref="BrokerEndpoint"/>); with <c>SHAREDSTORE_START_BROKER=1</c> a broker is started
/// first when none answers. After the broker died, ids opened through the old connection fail with
/// BrokerUnavailable, and the next create or join connects again (to a broker that was restarted meanwhile, if any).
/// A lost connection is disposed once its last container id is closed (never earlier: disposing unmaps the memory that
/// calls on those ids may still be reading).
/// <para>Why a new <see cref="SharedStoreClient"/> instead of letting the lost one reconnect (it can): reconnecting
/// disposes the lost connection's asynchronous channel and unmaps it, and operation ids of that connection may still
/// be in this library's table; object_opstatus on one would then read unmapped memory. A lost client is therefore
/// never called again here: its handles fail on their own (BrokerUnavailable), and it is disposed with its last
/// container id, when no operation of it can be left.</para>
/// </summary>
internal sealed class Connection
{
    private static readonly Lock s_gate = new();
    private static Connection? s_current;
    private int _containers; // container ids open through this connection; guarded by s_gate

    private Connection(SharedStoreClient client) => Client = client;

    public SharedStoreClient Client { get; }

    /// <summary>The live connection, connecting (and perhaps starting a broker) if there is none.</summary>
    /// <exception cref="SharedStoreException">BrokerUnavailable when no broker answers; VersionMismatch.</exception>
    public static Connection Current()
    {
        var c = Volatile.Read(ref s_current);
        if (c is not null && !c.Client.IsBrokerLost)
        {
            return c;
        }

        lock (s_gate)
        {
            c = s_current;
            if (c is not null && !c.Client.IsBrokerLost)
            {
                return c;
            }

            if (c is not null)
            {
                s_current = null;
                c.DisposeIfUnused();
            }

            var client = SharedStoreClient.Connect(Options());
            c = new Connection(client);
            Volatile.Write(ref s_current, c);
            return c;
        }
    }

    /// <summary>Counts a container id opened through this connection.</summary>
    public void AddContainer()
    {
        lock (s_gate)
        {
            _containers++;
        }
    }

    /// <summary>Uncounts a closed container id; a lost connection with none left is disposed.</summary>
    public void RemoveContainer()
    {
        lock (s_gate)
        {
            _containers--;
            if (!ReferenceEquals(s_current, this))
            {
                DisposeIfUnused();
            }
        }
    }

    /// <summary>Where the broker started for <c>SHAREDSTORE_START_BROKER=1</c> is: <c>$SHAREDSTORE_BROKER</c>, else
    /// <c>broker/SharedStore.Broker.dll</c> beside this library (where its publish puts it), else the client library's
    /// own default.</summary>
    public static string? BrokerPath()
    {
        string? env = Environment.GetEnvironmentVariable("SHAREDSTORE_BROKER");
        if (!string.IsNullOrEmpty(env))
        {
            return env;
        }

        string? dir = LibraryDirectory();
        if (dir is not null)
        {
            string beside = Path.Combine(dir, "broker", "SharedStore.Broker.dll");
            if (File.Exists(beside))
            {
                return beside;
            }
        }

        return null;
    }

    /// <summary>The directory libsharedstore.so was loaded from (dladdr of one of its own functions).</summary>
    public static unsafe string? LibraryDirectory()
    {
        delegate* unmanaged<int, sbyte*> self = &Exports.LibraryExports.StrError;
        Interop.Libc.DlInfo info;
        if (Interop.Libc.dladdr(self, &info) == 0 || info.dli_fname == 0)
        {
            return null;
        }

        string? file = Marshal.PtrToStringUTF8(info.dli_fname);
        return file is null ? null : Path.GetDirectoryName(Path.GetFullPath(file));
    }

    private static SharedStoreClientOptions Options() => new()
    {
        StartBrokerIfMissing = Environment.GetEnvironmentVariable("SHAREDSTORE_START_BROKER") == "1",
        BrokerPath = BrokerPath(),
        ClientName = ClientName(),
    };

    private static string ClientName()
    {
        try
        {
            return "libsharedstore:" + File.ReadAllText("/proc/self/comm").Trim();
        }
        catch (IOException)
        {
            return "libsharedstore";
        }
    }

    private void DisposeIfUnused()
    {
        if (_containers == 0 && Client.IsBrokerLost)
        {
            Client.Dispose();
        }
    }
}
