using System.Diagnostics;
using System.Globalization;
using SharedStore;
using SharedStore.TortureWorker;

// A client that does random operations on object OBJECT of CONTAINER forever, checking every block it reads, until
// it is killed. Prints "ready", then "p N" every 25 operations (its progress), and "FAIL …" (exit 1) on bad data.
//   SharedStore.TortureWorker SOCKET CONTAINER OBJECT SEED
string socket = args[0], containerName = args[1], objectName = args[2];
int seed = int.Parse(args[3], CultureInfo.InvariantCulture);
var rnd = new Random(seed);
var timeout = TimeSpan.FromSeconds(20);
using var client = SharedStoreClient.Connect(new SharedStoreClientOptions { SocketPath = socket });
using var con = client.JoinContainer(containerName);
var obj = con.JoinObject(objectName);
int blockSize = con.BlockSize;
int blocks = (int)(obj.Size / blockSize);
byte[] buffer = new byte[obj.Size];
uint writer = (uint)Environment.ProcessId;
uint seq = 0;
long ops = 0;
Console.WriteLine("ready");
while (true)
{
    int op = rnd.Next(100);
    int first = rnd.Next(blocks);
    int count = 1 + rnd.Next(Math.Min(op >= 45 && op < 85 ? 32 : 8, blocks - first));
    if (op < 45)
    {
        // get: every block not marked torn must carry a valid checksum.
        using var lease = obj.Get((long)first * blockSize, (long)count * blockSize, timeout);
        var span = lease.ReadOnlySpan;
        for (int b = 0; b < count; b++)
        {
            if (!BlockPattern.IsValid(span.Slice(b * blockSize, blockSize)) && !lease.Torn)
            {
                Console.WriteLine($"FAIL block {first + b} has a bad checksum and is not marked torn");
                return 1;
            }
        }

        if (rnd.Next(4) == 0)
        {
            Thread.Sleep(rnd.Next(3)); // hold the lease a while: kills then land on held leases too
        }
    }
    else if (op < 85)
    {
        // write whole blocks with fresh self-checking content.
        var data = buffer.AsSpan(0, count * blockSize);
        for (int b = 0; b < count; b++)
        {
            BlockPattern.Fill(data.Slice(b * blockSize, blockSize), writer, ++seq);
        }

        obj.Write((long)first * blockSize, data, timeout);
    }
    else if (op < 93)
    {
        // leave and re-join the object.
        obj.Leave();
        obj = con.JoinObject(objectName);
    }
    else
    {
        // create and destroy a private object (kills land inside create/destroy too). While the container is being
        // destroyed, create answers Destroyed: an expected outcome, so the worker just goes on.
        string name = $"tmp-{writer}-{seq++}";
        try
        {
            using var tmp = con.CreateObject(name, 1 + rnd.Next(1 << 16));
            tmp.Write(0, buffer.AsSpan(0, 8), timeout);
            tmp.Destroy(timeout);
        }
        catch (SharedStoreException e) when (e.Code == ErrorCode.Destroyed)
        {
            Thread.Sleep(1);
        }
    }

    if (++ops % 25 == 0)
    {
        Console.WriteLine($"p {ops}");
    }
}
