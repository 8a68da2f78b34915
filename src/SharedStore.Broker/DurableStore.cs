using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>A durable container's files: its folder (held open: every file is reached through it), its metadata, its
/// objects.</summary>
internal sealed class DurableContainer(DurableFolder folder, DurableContainerMeta meta)
{
    public DurableFolder Folder { get; } = folder;

    /// <summary>The path the folder was opened by (registry, messages, ContainerInfo); files are never reached by it.</summary>
    public string Directory => Folder.Path;

    public DurableContainerMeta Meta { get; } = meta;

    public List<DurableObject> Objects { get; } = [];

    /// <summary>One flush at a time per container.</summary>
    public object FlushGate { get; } = new();
}

/// <summary>One durable object: the file device behind its shared memory, and per block which shadow slot holds the
/// newest valid copy (and its generation). Write-back and removal serialize on <see cref="Gate"/>.</summary>
internal sealed unsafe class DurableObject(ObjectState state, string fileName, RandomAccessFileDevice device, byte* data, BlockLockRecord* locks, int blockSize)
{
    public const byte NoSlot = 255;

    public ObjectState State { get; } = state;

    /// <summary>The file's name in its container's folder (relative to <see cref="DurableContainer.Folder"/>).</summary>
    public string FileName { get; } = fileName;

    public RandomAccessFileDevice Device { get; } = device;

    public byte* Data { get; } = data;

    public BlockLockRecord* Locks { get; } = locks;

    public int BlockSize { get; } = blockSize;

    public long Size => State.Size;

    public long BlockCount => State.BlockCount;

    public long[] Generation { get; } = new long[state.BlockCount];

    public byte[] Slot { get; } = Enumerable.Repeat(NoSlot, (int)state.BlockCount).ToArray();

    public object Gate { get; } = new();

    public bool Closed { get; private set; }

    /// <summary>Waits for a write-back pass that holds the object (its <see cref="Gate"/>) to finish, marks it closed so
    /// no later pass touches it, and closes its file.</summary>
    public void Close()
    {
        lock (Gate)
        {
            Closed = true;
        }

        Device.Dispose();
    }

    public int BlockLength(long b) => (int)Math.Min(BlockSize, Size - (b * BlockSize));
}

/// <summary>What a restore found, per object (logged, counted, and pinned by the crash tests).</summary>
internal readonly record struct RestoreReport(string Container, string Object, long Blocks, long TornSlots, long CorruptBlocks);

/// <summary>
/// Durable containers (docs/ARCHITECTURE.md §11): the objects' shared memory is the cache, a file per object is the
/// store. Writers mark blocks dirty in their lock records; a background thread (and <see cref="Flush"/>) writes dirty
/// blocks back through the device scheduler (io_uring where available), each into the block's other shadow slot with
/// a checksum and a generation, and fdatasyncs every file it wrote before a later pass may overwrite the older slot.
/// Restore at broker start takes, per block, the valid slot with the highest generation.
/// <para><b>Invariant</b> (the argument for "never half old, half new"): for every block, the slot that write-back is
/// not writing holds a complete copy that is durable (fdatasynced) and at least as new as the last successful flush.
/// A write goes only to the other slot; it becomes the newest copy only once its checksums are on disk; the next pass
/// may overwrite the older slot only after this pass's fdatasync. A crash therefore tears at most the slot being
/// written, which restore detects by its checksums and skips (reporting it), falling back to the durable one.</para>
/// <para><b>Where files go</b>: a container's folder is opened once (O_DIRECTORY|O_NOFOLLOW), checked on that descriptor,
/// and held in a <see cref="DurableFolder"/> that every file operation goes through, so a root broker cannot be
/// redirected by a symlink or a rename (docs/ARCHITECTURE.md §2, "Durable paths").</para>
/// </summary>
internal sealed unsafe partial class DurableStore : IDisposable
{
    public const string MetaFileName = "container.ssmeta";
    public const string RegistryFileName = "durable-containers";
    // Bytes in flight per batch (at most 32 blocks, at least one): each block holds a read lock until the kernel has
    // copied it into the page cache, so a writer of a block being written back waits at most for a batch's copies.
    private const long BatchBytes = 8 << 20;
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(50);

    private const int MaxFileNameTries = 64;
    private readonly DurableFolder _stateFolder; // the registry's folder, held like a container's
    private readonly ILogger _logger;
    private readonly Lock _gate = new(); // containers list and registry
    private readonly List<DurableContainer> _containers = [];

    // Registered directories whose container could not be restored at start (damaged metadata or object file):
    // they stay registered, so a repaired container comes back at the next start instead of being dropped from the
    // registry the next time another container is created or destroyed.
    private readonly List<string> _unrestored = [];
    private readonly IDeviceAccessScheduler _scheduler;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _stop = new();
    private long _writtenBytes;
    private long _writeErrors;
    private long _tornSlots;
    private long _corruptBlocks;

    public DurableStore(string stateDirectory, ILogger logger)
    {
        _stateFolder = DurableFolder.Open(stateDirectory); // BrokerFolders.Prepare made it and checked it
        _logger = logger;
        _scheduler = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, DeviceMode.None);
        _thread = new Thread(WriteBackLoop) { IsBackground = true, Name = "sharedstore-writeback" };
        _thread.Start();
    }

    /// <summary>Bytes of blocks written back so far (data only).</summary>
    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);

    public long WriteErrors => Interlocked.Read(ref _writeErrors);

    public long TornSlots => Interlocked.Read(ref _tornSlots);

    public long CorruptBlocks => Interlocked.Read(ref _corruptBlocks);

    public string SchedulerDescription => _scheduler.SelectionReason;

    // ---- Containers and objects (called under the broker state lock) --------------------------------------

    /// <summary>Makes <paramref name="c"/> durable in <paramref name="directory"/>: opens the folder once
    /// (O_DIRECTORY|O_NOFOLLOW) and keeps it open for the container's life, checks on that descriptor that the caller
    /// may write it, writes the metadata through it and registers the folder for restore.</summary>
    public DurableContainer CreateContainer(ContainerState c, string directory, PeerCredentials who)
    {
        if (!Path.IsPathFullyQualified(directory))
        {
            throw new BrokerError(ErrorCode.InvalidArgument, $"durable path '{directory}' must be absolute");
        }

        if (directory.Any(char.IsControl))
        {
            // The registry holds one path per line: a newline would register a second folder nobody checked.
            throw new BrokerError(ErrorCode.InvalidArgument, "a durable path must not contain control characters");
        }

        directory = Path.GetFullPath(directory);
        DurableFolder folder;
        try
        {
            folder = DurableFolder.Open(directory);
        }
        catch (DurableFolderException e)
        {
            throw new BrokerError(e.Errno switch
            {
                Interop.Libc.ENOENT => ErrorCode.NotFound,
                Interop.Libc.ELOOP or Interop.Libc.ENOTDIR or Interop.Libc.EINVAL => ErrorCode.InvalidArgument,
                Interop.Libc.EACCES or Interop.Libc.EPERM => ErrorCode.PermissionDenied,
                _ => ErrorCode.NoResources,
            }, $"durable path {e.Message}");
        }

        var meta = new DurableContainerMeta
        {
            FormatVersion = 1,
            Name = c.Name,
            GroupId = c.GroupId,
            WritePolicy = c.WritePolicy,
            BlockSize = (uint)c.BlockSize,
            CreatorUid = c.CreatorUid,
            NextFile = 1,
        };
        var dc = new DurableContainer(folder, meta);
        try
        {
            if (!folder.MayWrite(who))
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} may not write durable path '{directory}' ({folder.Describe()})");
            }

            lock (_gate)
            {
                if (folder.Exists(MetaFileName) || _containers.Any(d => d.Folder.Identity == folder.Identity))
                {
                    throw new BrokerError(ErrorCode.AlreadyExists, $"'{directory}' already holds a durable container");
                }
            }

            try
            {
                folder.ReplaceFile(MetaFileName, meta.ToByteArray(), noReplace: true); // a metadata made meanwhile is not replaced
            }
            catch (DurableFolderException e)
            {
                throw new BrokerError(e.Errno switch
                {
                    Interop.Libc.EEXIST => ErrorCode.AlreadyExists,
                    Interop.Libc.EACCES or Interop.Libc.EPERM => ErrorCode.PermissionDenied,
                    _ => ErrorCode.NoResources,
                }, $"cannot write the durable container's metadata in '{directory}': {e.Message}");
            }
        }
        catch
        {
            folder.Dispose();
            throw;
        }

        lock (_gate)
        {
            _unrestored.Remove(directory); // emptied by its owner and reused: registered once
            _containers.Add(dc);
            SaveRegistry();
        }

        return dc;
    }

    /// <summary>Creates the object's file, new (O_CREAT|O_EXCL|O_NOFOLLOW in the container's folder), preallocated
    /// (a full disk is NoResources here, not a write-back failure later), and records it in the metadata.</summary>
    public void AddObject(DurableContainer dc, ObjectState o)
    {
        string file = "";
        bool created = false;
        RandomAccessFileDevice? device = null;
        try
        {
            var fd = CreateObjectFile(dc, out file);
            created = true;
            device = new RandomAccessFileDevice(Path.Combine(dc.Directory, file), fd, DeviceMode.None);
            long length = DurableFileDescriptor.FileLength(o.BlockCount, (int)dc.Meta.BlockSize);
            int r = WithFd(device, fd => Interop.Libc.fallocate(fd, 0, 0, length) == 0 ? 0 : Interop.Libc.LastErrno);
            if (r != 0)
            {
                throw new BrokerError(ErrorCode.NoResources, $"cannot allocate {length} bytes for object '{o.Name}' in '{dc.Directory}': {Interop.Libc.StrError(r)}");
            }

            WriteFileHeader(device, o, (int)dc.Meta.BlockSize);
            device.Flush(metadata: true);
            dc.Meta.NextFile++;
            dc.Meta.Objects.Add(new DurableObjectMeta { Name = o.Name, Size = (ulong)o.Size, File = file });
            WriteMeta(dc);
        }
        catch (Exception e) when (e is DeviceException or IOException or UnauthorizedAccessException or BrokerError)
        {
            device?.Dispose();
            if (created)
            {
                dc.Folder.Delete(file); // only the file made here: a name that was taken is not ours to delete
            }

            // Only when the metadata got that far: a full disk fails the fallocate before the entry is added, and
            // RepeatedField.Remove(null) throws (which turned NoResources into Internal and left the object behind).
            if (dc.Meta.Objects.FirstOrDefault(m => m.File == file) is { } added)
            {
                dc.Meta.Objects.Remove(added);
            }

            if (e is BrokerError)
            {
                throw;
            }

            throw new BrokerError(ErrorCode.NoResources, $"cannot create the file of object '{o.Name}' in '{dc.Directory}': {e.Message}");
        }

        Attach(dc, o, file, device);
    }

    /// <summary>Creates the next object file, <c>o-N.ssdata</c>, with O_EXCL: a name already taken (left by a crash
    /// between a file's creation and the metadata that records it, or put there by the folder's owner) is skipped,
    /// never opened or replaced.</summary>
    private static SafeFd CreateObjectFile(DurableContainer dc, out string file)
    {
        for (int tries = 0; ; tries++)
        {
            file = ObjectFileName(dc.Meta.NextFile);
            try
            {
                return dc.Folder.CreateFile(file);
            }
            catch (DurableFolderException e) when (e.Errno == Interop.Libc.EEXIST && tries < MaxFileNameTries)
            {
                dc.Meta.NextFile++;
            }
        }
    }

    private static string ObjectFileName(ulong n) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"o-{n}.ssdata");

    /// <summary>Closes and deletes the object's file and drops it from the metadata.</summary>
    public void RemoveObject(DurableContainer dc, ObjectState o)
    {
        var d = o.Durable;
        if (d is null)
        {
            return;
        }

        d.Close();
        lock (_gate)
        {
            dc.Objects.Remove(d);
        }

        dc.Folder.Delete(d.FileName);
        dc.Meta.Objects.Remove(dc.Meta.Objects.FirstOrDefault(m => m.File == d.FileName));
        o.Durable = null;
        TryWriteMeta(dc);
    }

    /// <summary>Destroy: deletes the container's files and forgets it (its directory stays).</summary>
    public void RemoveContainer(DurableContainer dc)
    {
        foreach (var d in dc.Objects.ToList())
        {
            RemoveObject(dc, d.State);
        }

        dc.Folder.Delete(MetaFileName);
        dc.Folder.Sync();
        lock (_gate)
        {
            _containers.Remove(dc);
            SaveRegistry();
        }

        dc.Folder.Dispose();
    }

    /// <summary>Broker shutdown: one last write-back pass (what clients do not hold write-locked goes to disk), then
    /// the files are closed; nothing is deleted.</summary>
    public void Dispose()
    {
        _stop.Set();
        _thread.Join(TimeSpan.FromSeconds(30));
        List<DurableContainer> all;
        lock (_gate)
        {
            all = [.. _containers];
        }

        foreach (var dc in all)
        {
            lock (dc.FlushGate)
            {
                var (_, error) = WriteBack(dc);
                if (error is not null)
                {
                    Log.WriteBackFailed(_logger, dc.Meta.Name, error);
                }
            }
        }

        lock (_gate)
        {
            foreach (var dc in _containers)
            {
                foreach (var d in dc.Objects)
                {
                    d.Close();
                }

                dc.Folder.Dispose();
            }
        }

        _stateFolder.Dispose();
        _scheduler.Dispose();
    }

    // ---- Flush and write-back ----------------------------------------------------------------------------

    /// <summary>Returns once every block that was dirty when it was called has been written back and fdatasynced.
    /// Busy blocks (a writer holds them) are retried until the timeout.</summary>
    public void Flush(DurableContainer dc, TimeSpan timeout, CancellationToken token)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (dc.FlushGate)
        {
            while (true)
            {
                var (clean, error) = WriteBack(dc);
                if (error is not null)
                {
                    throw new BrokerError(ErrorCode.NoResources, $"flush of '{dc.Meta.Name}' failed: {error} (the memory copy is intact and stays dirty)");
                }

                if (clean)
                {
                    return;
                }

                if (token.IsCancellationRequested)
                {
                    throw new BrokerError(ErrorCode.Canceled, "flush canceled");
                }

                if (Environment.TickCount64 >= deadline)
                {
                    throw new BrokerError(ErrorCode.Timeout, $"flush of '{dc.Meta.Name}': blocks stayed write-locked by clients");
                }

                Thread.Sleep(1);
            }
        }
    }

    private void WriteBackLoop()
    {
        while (!_stop.Wait(Interval))
        {
            List<DurableContainer> all;
            lock (_gate)
            {
                all = [.. _containers];
            }

            foreach (var dc in all)
            {
                if (Monitor.TryEnter(dc.FlushGate))
                {
                    try
                    {
                        var (_, error) = WriteBack(dc);
                        if (error is not null)
                        {
                            Log.WriteBackFailed(_logger, dc.Meta.Name, error);
                        }
                    }
                    finally
                    {
                        Monitor.Exit(dc.FlushGate);
                    }
                }
            }
        }
    }

    /// <summary>One pass over a container: every dirty block that is not write-locked is checksummed and written to
    /// its other shadow slot under a read hold, and each file written is fdatasynced. Returns whether no dirty block was
    /// skipped, and the first error (failed blocks are marked dirty again).</summary>
    private (bool Clean, string? Error) WriteBack(DurableContainer dc)
    {
        List<DurableObject> objects;
        lock (_gate)
        {
            objects = [.. dc.Objects];
        }

        bool clean = true;
        string? error = null;
        foreach (var d in objects)
        {
            lock (d.Gate)
            {
                if (d.Closed)
                {
                    continue;
                }

                var (objClean, objError) = WriteBack(d);
                clean &= objClean;
                error ??= objError;
            }
        }

        return (clean, error);
    }

    private (bool Clean, string? Error) WriteBack(DurableObject d)
    {
        bool clean = true;
        int batchBlocks = (int)Math.Clamp(BatchBytes / d.BlockSize, 1, 32);
        var batch = new List<PendingWrite>(batchBlocks);
        using var inflight = new CountdownEvent(1); // this thread's own count, signalled in Finish
        string? error = null;
        bool wrote = false;
        try
        {
            for (long b = 0; b < d.BlockCount; b++)
            {
                BlockLockRecord* rec = d.Locks + b;
                if (!BlockLock.IsDirty(rec))
                {
                    continue;
                }

                if (!d.State.Ledger.TryAcquireReadFast(rec, b))
                {
                    clean = false; // a writer holds or waits for it: next pass (never block here: see class comment)
                    continue;
                }

                // The read hold is kept until the block's write has completed (Start's completion drops it): the
                // kernel copies the block from the shared memory into the page cache, so the bytes it copies are the
                // bytes checksummed here. No bounce buffer: one copy per block instead of two.
                bool started = false;
                try
                {
                    if (!BlockLock.TakeDirty(rec))
                    {
                        continue;
                    }

                    var w = PendingWrite.Rent();
                    w.Block = b;
                    w.Length = d.BlockLength(b);
                    w.Torn = BlockLock.IsTorn(rec);
                    w.Record = rec;
                    w.Ledger = d.State.Ledger;
                    w.DataCrc = DurableFileDescriptor.Crc32C(d.Data + (b * d.BlockSize), w.Length);
                    batch.Add(w);
                    Start(d, w, inflight);
                    started = true;
                }
                finally
                {
                    if (!started)
                    {
                        d.State.Ledger.ReleaseRead(rec, b);
                    }
                }

                if (batch.Count == batchBlocks)
                {
                    error ??= Finish(d, batch, inflight);
                    wrote = true;
                }
            }

            if (batch.Count > 0)
            {
                error ??= Finish(d, batch, inflight);
                wrote = true;
            }

            if (wrote)
            {
                // Before the next pass may overwrite the older slot of any block written now (see the invariant).
                d.Device.Flush();
            }
        }
        catch (DeviceException e)
        {
            error ??= e.Message;
        }
        finally
        {
            if (batch.Count > 0)
            {
                _ = Finish(d, batch, inflight); // thrown past started writes: they still own their holds and signal
            }
        }

        return (clean, error);
    }

    /// <summary>Starts the write of one block, read-held by the broker's slot: one scatter/gather request (slot header
    /// page + the block's data straight from the shared memory) into its other slot, counted in
    /// <paramref name="inflight"/>. The read hold is dropped once both bindings have completed; if this throws,
    /// nothing was queued and the caller drops it.</summary>
    private void Start(DurableObject d, PendingWrite w, CountdownEvent inflight)
    {
        long b = w.Block;
        int target = d.Slot[b] == 0 ? 1 : 0;
        long gen = d.Generation[b] + 1;
        var h = (DurableSlotHeader*)w.Header;
        *h = default;
        h->Magic = DurableFileDescriptor.SlotMagic;
        h->Version = DurableFileDescriptor.SlotVersion;
        h->Flags = w.Torn ? DurableFileDescriptor.SlotFlagTorn : (ushort)0;
        h->Block = b;
        h->Generation = gen;
        h->Length = w.Length;
        h->DataCrc = w.DataCrc;
        DurableSlotHeader.Seal(h);
        w.Target = target;
        w.Generation = gen;
        w.Failed = null;
        w.Bindings = 2;
        inflight.AddCount(2);
        var header = new RandomAccessRequestBinding((nint)w.Header, DurableFileDescriptor.SlotHeaderSize, Completed) { State = w };
        var data = new RandomAccessRequestBinding((nint)(d.Data + (b * d.BlockSize)), w.Length, Completed) { State = w };
        long offset = DurableFileDescriptor.SlotOffset(b, target, d.BlockSize);
        try
        {
            if (s_tearWindowMs > 0)
            {
                ScheduleWithTearWindow(d, [(offset, header, data)]); // tests only: header and data apart in time
                return;
            }

            var request = new RandomAccessRequest(d.Device, RandomAccessOperation.Write, offset);
            request.Add(header);
            request.Add(data);
            _scheduler.Schedule(request);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
        {
            w.Failed = "the broker is stopping"; // no binding was queued: nothing will signal for this block, and
            inflight.Signal(2);                   // the caller drops the read hold
            throw;
        }

        void Completed(RandomAccessRequestBinding binding, TransferResult r)
        {
            var pending = (PendingWrite)binding.State!;
            if (!r.Succeeded)
            {
                pending.Failed = r.Errno != 0 ? Interop.Libc.StrError(r.Errno) : r.Status.ToString();
            }

            if (Interlocked.Decrement(ref pending.Bindings) == 0)
            {
                pending.Ledger!.ReleaseRead(pending.Record, pending.Block);
            }

            inflight.Signal();
        }
    }

    /// <summary>Waits for a batch's writes (<see cref="Start"/>ed), records the new slots; blocks whose write failed
    /// are marked dirty again. Returns the first error.</summary>
    private string? Finish(DurableObject d, List<PendingWrite> batch, CountdownEvent inflight)
    {
        string? error = null;
        long start = long.MaxValue, end = 0;
        inflight.Signal();
        inflight.Wait();
        inflight.Reset(1);
        foreach (var w in batch)
        {
            if (w.Failed is null)
            {
                d.Slot[w.Block] = (byte)w.Target;
                d.Generation[w.Block] = w.Generation;
                Interlocked.Add(ref _writtenBytes, w.Length);
                long at = DurableFileDescriptor.SlotOffset(w.Block, w.Target, d.BlockSize);
                start = Math.Min(start, at);
                end = Math.Max(end, at + DurableFileDescriptor.SlotHeaderSize + w.Length);
            }
            else
            {
                error ??= $"block {w.Block} of '{d.State.Name}': {w.Failed}";
                Interlocked.Increment(ref _writeErrors);
                Interlocked.Or(ref d.Locks[w.Block].Flags, BlockLockDescriptor.FlagDirty);
            }

            w.Return();
        }

        batch.Clear();

        // Start writing the batch out now (POSIX_FADV_DONTNEED starts writeback of the range's dirty pages without
        // waiting, and drops only pages that are already clean), so that the disk works while the next batches are
        // checksummed and copied and the pass's fdatasync finds little left to write. With the whole pass left to
        // that fdatasync, it took 200-250 ms of a 1 GiB flush that spent 450-600 ms in all (durable-writeback, bench
        // README).
        if (end > start)
        {
            _ = WithFd(d.Device, fd => Interop.Libc.posix_fadvise(fd, start, end - start, Interop.Libc.POSIX_FADV_DONTNEED));
        }

        return error;
    }

    /// <summary>One block's write in flight: its slot header page (aligned) and what Finish records. Pooled
    /// process-wide (at most 64 kept), so flushes on pool threads do not each keep their own.</summary>
    private sealed class PendingWrite
    {
        private static readonly Stack<PendingWrite> s_pool = new();

        private PendingWrite() => Header = (byte*)NativeMemory.AlignedAlloc(DurableFileDescriptor.SlotHeaderSize, 4096);

        public byte* Header { get; }

        public long Block;
        public int Length;
        public bool Torn;
        public uint DataCrc;
        public int Target;
        public long Generation;
        public string? Failed;
        public int Bindings;
        public BlockLockRecord* Record;
        public BrokerSlotLedger? Ledger; // the broker slot's ledger of the block's object (the read is released through it)

        public static PendingWrite Rent()
        {
            lock (s_pool)
            {
                if (s_pool.TryPop(out var w))
                {
                    return w;
                }
            }

            return new PendingWrite();
        }

        public void Return()
        {
            Record = null;
            Ledger = null;
            lock (s_pool)
            {
                if (s_pool.Count < 64)
                {
                    s_pool.Push(this);
                    return;
                }
            }

            NativeMemory.AlignedFree(Header);
        }
    }

    // ---- Restore -----------------------------------------------------------------------------------------

    /// <summary>The durable containers registered for this broker (directories), for restore at start.</summary>
    public List<string> RegisteredDirectories()
    {
        if (!_stateFolder.Exists(RegistryFileName))
        {
            return [];
        }

        string text = System.Text.Encoding.UTF8.GetString(_stateFolder.ReadFile(RegistryFileName));
        return [.. text.Split('\n').Where(l => l.Length > 0)];
    }

    /// <summary>
    /// Opens a registered container's folder for restore the way a create opens it (O_DIRECTORY|O_NOFOLLOW: a symlink
    /// put in its place is refused, not followed), reads its metadata through it (O_NOFOLLOW, a regular file the broker
    /// made), and checks the folder again: the container's creator must still be allowed to write it by the create's
    /// rule, with the creator's groups taken from the user database (no socket carries them now). A folder that fails
    /// (its owner or mode changed while the broker was down) is not restored: the caller logs it, its files stay as
    /// they are and it stays registered, so putting the owner or mode back brings it back at the next start.
    /// </summary>
    public DurableContainer OpenRegistered(string directory)
    {
        var folder = DurableFolder.Open(directory);
        try
        {
            var meta = DurableContainerMeta.Parser.ParseFrom(folder.ReadFile(MetaFileName));
            if (meta.FormatVersion != 1)
            {
                throw new InvalidDataException($"'{directory}': durable format version {meta.FormatVersion}, this broker reads 1");
            }

            var creator = Interop.Libc.UserGroups(meta.CreatorUid) is { } g
                ? new PeerCredentials(0, meta.CreatorUid, g.Gid, g.Groups)
                : new PeerCredentials(0, meta.CreatorUid, uint.MaxValue, []);
            if (!folder.MayWrite(creator))
            {
                throw new InvalidDataException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"the folder ({folder.Describe()}) is no longer writable by its container's creator, uid {meta.CreatorUid}: not restored; its files stay as they are and it stays registered (give the folder back to its creator and restart)"));
            }

            return new DurableContainer(folder, meta);
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    /// <summary>Adopts a container opened by <see cref="OpenRegistered"/> (its objects are added with
    /// <see cref="RestoreObject"/>).</summary>
    public void AdoptContainer(DurableContainer dc)
    {
        lock (_gate)
        {
            _containers.Add(dc);
        }
    }

    /// <summary>A registered container that cannot be restored: closes the files opened so far (deleting nothing),
    /// forgets the container, and keeps its directory registered for the next start.</summary>
    public void AbandonRestore(string directory, DurableContainer? dc)
    {
        lock (_gate)
        {
            if (dc is not null)
            {
                _containers.Remove(dc);
            }

            _unrestored.Add(directory);
        }

        foreach (var d in dc?.Objects.ToList() ?? [])
        {
            d.Close();
            d.State.Durable = null;
        }

        dc?.Folder.Dispose();
    }

    /// <summary>Loads an object's blocks from its file into its (fresh, zeroed) shared memory: per block the valid
    /// slot with the highest generation; torn slots are skipped and counted; a block whose written slots are all
    /// invalid is marked torn in memory (leases report it) and counted as corrupt.</summary>
    public RestoreReport RestoreObject(DurableContainer dc, ObjectState o, string file)
    {
        string path = Path.Combine(dc.Directory, file); // for messages only
        if (!IsObjectFileName(file))
        {
            throw new InvalidDataException($"the metadata names object file '{file}', not one the broker makes (o-N.ssdata)");
        }

        var device = new RandomAccessFileDevice(path, dc.Folder.OpenFile(file, writable: true), DeviceMode.None);
        int bs = (int)dc.Meta.BlockSize;
        var d = Attach(dc, o, file, device);
        long torn = 0, corrupt = 0;
        CheckFileHeader(device, o, bs);

        // The object's memory is reserved and mapped on another thread, in order, ahead of the reads below: the
        // reservation (a fallocate that zeroes 1 GiB in 250-350 ms here) and the page-table work then run beside the
        // disk instead of before it (MACHINE-FACTS: a never-touched page costs about 2 µs). A read that overtakes it
        // faults its pages itself. The object is served only after the reservation has covered all of it.
        using var reserve = new RestoreReservation(o);

        // 1. Every slot header (2 per block), batched.
        long n = o.BlockCount;
        byte* headers = (byte*)NativeMemory.AlignedAlloc((nuint)(2 * n * DurableFileDescriptor.SlotHeaderSize), 4096);
        try
        {
            RunBatched(2 * n, i => (DurableFileDescriptor.SlotOffset(i / 2, (int)(i % 2), bs), (nint)(headers + (i * DurableFileDescriptor.SlotHeaderSize)), DurableFileDescriptor.SlotHeaderSize), device, RandomAccessOperation.Read);

            // 2. Choose per block; read the chosen slot's data straight into the object's memory, batched.
            var choice = new int[n];
            for (long b = 0; b < n; b++)
            {
                choice[b] = Choose(headers, b, exclude: -1, d.BlockLength(b), ref torn);
            }

            (long Offset, nint Memory, int Length) Data(long b) => choice[b] < 0 ? (-1, 0, 0) : (DurableFileDescriptor.SlotOffset(b, choice[b], bs) + DurableFileDescriptor.SlotHeaderSize, (nint)(d.Data + (b * bs)), d.BlockLength(b));

            // Each block's checksum is taken as its read completes (on the scheduler's completion thread, while the
            // next reads are in flight) rather than in a pass over the whole object afterwards, which took 170-250 ms
            // per GiB after the reads.
            var crc = new uint[n];
            void Checksum(long b) => crc[b] = DurableFileDescriptor.Crc32C(d.Data + (b * bs), d.BlockLength(b));

            // Direct I/O where the file system allows it and the block is aligned (all but a short last block), into
            // huge-page bounce buffers, then one copy into the object's memory. Buffered, the kernel copied every
            // block out of the page cache and the cold 1 GiB ended up cached twice: 1.2-1.7 s for 1 GiB against
            // 0.5-1.1 s for the baseline. Direct into the object's 4 KiB shared-memory pages, a 1 MiB read needs 256
            // DMA segments where the virtio disk takes 254 per request (max_segments), so every block went out as
            // two requests: fio here reads 1 MiB direct at QD32 at 0.93-1.04 GB/s into 4 KiB pages and 2.1-2.5 GB/s
            // into huge pages (4 alternating runs each). A direct read first writes back any dirty cached pages of
            // its range (the page cache of a broker killed before the kernel wrote them), so it sees what they hold.
            using (var direct = TryOpenDirect(dc, file, device))
            using (var bounce = direct is null ? null : BounceBuffers.TryCreate(bs))
            {
                bool Aligned(long b)
                {
                    var (off, mem, len) = Data(b);
                    return direct is not null && off >= 0 && off % direct.OffsetAlignment == 0 && len % direct.OffsetAlignment == 0 && (bounce is not null || mem % direct.MemoryAlignment == 0);
                }

                if (direct is not null)
                {
                    RunBatched(n, b => Aligned(b) ? Data(b) : (-1, 0, 0), direct, RandomAccessOperation.Read, Checksum, bounce);
                }

                RunBatched(n, b => Aligned(b) ? (-1, 0, 0) : Data(b), device, RandomAccessOperation.Read, Checksum);
            }

            // 3. Verify; fall back to the other slot when the data does not match its checksum.
            for (long b = 0; b < n; b++)
            {
                int len = d.BlockLength(b);
                byte* mem = d.Data + (b * bs);
                int s = choice[b];
                int tried = 0; // slots whose data failed: with both headers intact and both data damaged, the
                               // fallback would otherwise alternate between the two forever (the broker never started)
                while (s >= 0)
                {
                    var h = SlotHeader(headers, b, s);
                    if ((s == choice[b] ? crc[b] : DurableFileDescriptor.Crc32C(mem, len)) == h->DataCrc)
                    {
                        d.Slot[b] = (byte)s;
                        d.Generation[b] = h->Generation;
                        if ((h->Flags & DurableFileDescriptor.SlotFlagTorn) != 0)
                        {
                            BlockLock.MarkTorn(o.Segment.Record(o.RecordIndex + b));
                        }

                        break;
                    }

                    torn++; // data torn under an intact header: the write of the data did not finish
                    tried |= 1 << s;
                    int other = Choose(headers, b, exclude: s, len, ref torn);
                    if (other >= 0 && (tried & (1 << other)) != 0)
                    {
                        other = -1;
                    }

                    if (other >= 0)
                    {
                        RunBatched(1, _ => (DurableFileDescriptor.SlotOffset(b, other, bs) + DurableFileDescriptor.SlotHeaderSize, (nint)mem, len), device, RandomAccessOperation.Read);
                    }

                    s = other;
                }

                if (s < 0 && (IsEmpty(headers, b, 0) != IsEmpty(headers, b, 1)))
                {
                    // One slot never written, the other invalid: that slot was the block's first write-back, torn by
                    // the crash (a second write-back goes to the other slot, so it would not be empty). The empty
                    // slot is the block's durable copy by the invariant: the object's initial zeros, generation 0.
                    // The next write-back goes to the invalid slot (Slot names the empty one), above its generation.
                    int empty = IsEmpty(headers, b, 0) ? 0 : 1;
                    new Span<byte>(mem, len).Clear();
                    d.Slot[b] = (byte)empty;
                    d.Generation[b] = Gen(headers, b, 1 - empty);
                }
                else if (s < 0 && !IsEmpty(headers, b, 0))
                {
                    // Written once, no valid copy left: never serve it silently.
                    new Span<byte>(mem, len).Clear();
                    BlockLock.MarkTorn(o.Segment.Record(o.RecordIndex + b));
                    corrupt++;
                    d.Generation[b] = Math.Max(Gen(headers, b, 0), Gen(headers, b, 1));
                    Log.DurableBlockCorrupt(_logger, dc.Meta.Name, o.Name, b, Describe(headers, b, 0, len), Describe(headers, b, 1, len));
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(headers);
        }

        reserve.Wait(); // before anyone can use the object: running out of memory is a failed restore, not a SIGBUS

        // Restored blocks are clean: what is on disk is what is in memory (torn marks set above keep their dirty
        // bit, so a corrupt block is rewritten, flagged torn, at the next pass).
        for (long b = 0; b < n; b++)
        {
            BlockLockRecord* rec = o.Segment.Record(o.RecordIndex + b);
            if (!BlockLock.IsTorn(rec))
            {
                Interlocked.And(ref rec->Flags, ~BlockLockDescriptor.FlagDirty);
            }
        }

        // The restored bytes are in place and no one has the object yet: version 1, every block of it.
        ObjectVersion.Publish(o.Segment.Record(o.RecordIndex), 0, n - 1);

        Interlocked.Add(ref _tornSlots, torn);
        Interlocked.Add(ref _corruptBlocks, corrupt);
        return new RestoreReport(dc.Meta.Name, o.Name, n, torn, corrupt);
    }

    /// <summary>Reserves (fallocate) and maps (MADV_POPULATE_WRITE) an object's memory on its own thread, 8 MiB at a
    /// time from the start. <see cref="Wait"/> throws NoResources if the memory could not be reserved; disposing
    /// stops it early (a failed restore) and waits for it.</summary>
    private sealed class RestoreReservation : IDisposable
    {
        private const long Chunk = 8 << 20;
        private readonly Thread _thread;
        private volatile bool _stop;
        private string? _error;

        public RestoreReservation(ObjectState o)
        {
            _thread = new Thread(() => Run(o)) { IsBackground = true, Name = "sharedstore-restore-reserve" };
            _thread.Start();
        }

        public void Wait()
        {
            _thread.Join();
            if (_error is not null)
            {
                throw new BrokerError(ErrorCode.NoResources, _error);
            }
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }

        private void Run(ObjectState o)
        {
            for (long at = 0; at < o.Size && !_stop; at += Chunk)
            {
                long len = Math.Min(Chunk, o.Size - at);
                if (!Memfd.Reserve(o.Segment.DataFd, o.DataOffset + at, len, out int errno))
                {
                    _error = $"cannot reserve {o.Size} bytes of shared memory for object '{o.Name}': {Interop.Libc.StrError(errno)}";
                    return;
                }

                o.Segment.DataMap.Populate(o.DataOffset + at, len);
            }
        }
    }

    private static int Choose(byte* headers, long b, int exclude, int length, ref long torn)
    {
        int best = -1;
        long bestGen = -1;
        for (int s = 0; s < 2; s++)
        {
            if (s == exclude)
            {
                continue;
            }

            var h = SlotHeader(headers, b, s);
            if (DurableSlotHeader.IsEmpty(h))
            {
                continue;
            }

            if (!DurableSlotHeader.IsIntact(h, b) || h->Length != length)
            {
                if (exclude < 0)
                {
                    torn++; // a header torn or damaged: counted once, on the first look
                }

                continue;
            }

            if (h->Generation > bestGen)
            {
                best = s;
                bestGen = h->Generation;
            }
        }

        return best;
    }

    private static string Describe(byte* headers, long b, int s, int length)
    {
        var h = SlotHeader(headers, b, s);
        return DurableSlotHeader.IsEmpty(h) ? "never written"
            : !DurableSlotHeader.IsIntact(h, b) ? "header damaged"
            : h->Length != length ? $"header for {h->Length} bytes"
            : $"generation {h->Generation}, data does not match its checksum";
    }

    /// <summary>Block <paramref name="b"/>'s slot <paramref name="s"/> header in the headers restore read (2 per block).</summary>
    private static DurableSlotHeader* SlotHeader(byte* headers, long b, int s) =>
        (DurableSlotHeader*)(headers + (((2 * b) + s) * DurableFileDescriptor.SlotHeaderSize));

    private static bool IsEmpty(byte* headers, long b, int s) =>
        DurableSlotHeader.IsEmpty(SlotHeader(headers, b, s));

    private static long Gen(byte* headers, long b, int s)
    {
        var h = SlotHeader(headers, b, s);
        return DurableSlotHeader.IsIntact(h, b) ? h->Generation : 0;
    }

    /// <summary>Runs <paramref name="count"/> transfers (items with a negative offset are skipped) through the scheduler,
    /// 32 in flight, calling <paramref name="completed"/> with each item's index once it has transferred (on the
    /// completion thread; it must not throw); throws on any failure, once the transfers in flight have completed.</summary>
    private void RunBatched(long count, Func<long, (long Offset, nint Memory, int Length)> item, RandomAccessFileDevice device, RandomAccessOperation op, Action<long>? completed = null, BounceBuffers? bounce = null)
    {
        // A sliding window: each completion starts the next transfer (on the scheduler's completion thread), so the
        // queue stays 32 deep. Batches of 32 that each waited for their slowest transfer let it drain 32 times per GiB.
        // With bounce buffers (reads only) each transfer reads into a free buffer, and its completion copies the
        // buffer to the item's memory and frees the buffer before it starts the next transfer.
        int Depth = bounce?.Count ?? 32;
        long next = 0;
        int pending = 1; // this thread's own count, dropped once the first transfers are started
        string? failed = null;
        using var done = new ManualResetEventSlim();

        bool StartNext()
        {
            while (Volatile.Read(ref failed) is null)
            {
                long i = Interlocked.Increment(ref next) - 1;
                if (i >= count)
                {
                    return false;
                }

                var (off, mem, len) = item(i);
                if (off < 0 || len <= 0)
                {
                    continue;
                }

                Interlocked.Increment(ref pending);
                var r = new RandomAccessRequest(device, op, off);
                if (bounce is not null)
                {
                    int k = bounce.Rent();
                    r.Add(new RandomAccessRequestBinding(bounce[k], len, Completed) { State = new Bounced(i, k, mem) });
                }
                else
                {
                    r.Add(new RandomAccessRequestBinding(mem, len, Completed) { State = i });
                }

                _scheduler.Schedule(r);
                return true;
            }

            return false;
        }

        void Completed(RandomAccessRequestBinding b, TransferResult res)
        {
            if (!res.Succeeded || (op == RandomAccessOperation.Read && res.BytesTransferred != b.Length))
            {
                Interlocked.CompareExchange(ref failed, $"{op} of {b.Length} bytes at {b.DeviceOffset} of {device.Path}: {res.Status} {res.BytesTransferred}", null);
                if (b.State is Bounced failedVia)
                {
                    bounce!.Return(failedVia.Buffer);
                }
            }
            else if (b.State is Bounced via)
            {
                Buffer.MemoryCopy((void*)b.Address, (void*)via.Memory, b.Length, b.Length);
                bounce!.Return(via.Buffer);
                StartNext();
                completed?.Invoke(via.Item);
            }
            else
            {
                StartNext();
                completed?.Invoke((long)b.State!);
            }

            if (Interlocked.Decrement(ref pending) == 0)
            {
                done.Set();
            }
        }

        for (int k = 0; k < Depth && StartNext(); k++)
        {
        }

        if (Interlocked.Decrement(ref pending) != 0)
        {
            done.Wait();
        }

        if (failed is not null)
        {
            throw new IOException(failed);
        }
    }

    private sealed record Bounced(long Item, int Buffer, nint Memory);

    /// <summary>Read buffers for restore's direct reads, in transparent huge pages where the kernel gives them
    /// (MADV_HUGEPAGE on an anonymous, 2 MiB-aligned mapping): physically contiguous memory lets a 1 MiB read go to
    /// the disk as one request. Up to 32 buffers of one block each, 64 MiB at most.</summary>
    private sealed class BounceBuffers : IDisposable
    {
        private const long HugePage = 2 << 20;
        private readonly nint _mapping;
        private readonly nuint _length;
        private readonly nint _base;
        private readonly long _stride;
        private readonly Stack<int> _free = new();

        private BounceBuffers(nint mapping, nuint length, nint @base, long stride, int count)
        {
            _mapping = mapping;
            _length = length;
            _base = @base;
            _stride = stride;
            Count = count;
            for (int k = count - 1; k >= 0; k--)
            {
                _free.Push(k);
            }
        }

        public int Count { get; }

        public nint this[int k] => _base + (nint)(k * _stride);

        /// <summary>Null where the block is too large for the budget or the memory cannot be mapped (reads then go
        /// straight into the object's memory).</summary>
        public static BounceBuffers? TryCreate(int blockSize)
        {
            int count = (int)Math.Min(32, (64L << 20) / blockSize);
            if (count < 4)
            {
                return null;
            }

            long stride = ((long)blockSize + 4095) & ~4095L;
            long length = (count * stride) + HugePage; // room to start on a huge-page boundary
            nint p = Interop.Libc.mmap(0, (nuint)length, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS, -1, 0);
            if (p == Interop.Libc.MAP_FAILED)
            {
                return null;
            }

            nint aligned = (nint)(((long)p + HugePage - 1) & ~(HugePage - 1));
            _ = Interop.Libc.madvise(aligned, (nuint)(count * stride), Interop.Libc.MADV_HUGEPAGE); // best effort
            return new BounceBuffers(p, (nuint)length, aligned, stride, count);
        }

        public int Rent()
        {
            lock (_free)
            {
                return _free.Pop(); // never empty: at most Count transfers are in flight
            }
        }

        public void Return(int k)
        {
            lock (_free)
            {
                _free.Push(k);
            }
        }

        public void Dispose() => Interop.Libc.munmap(_mapping, _length);
    }

    /// <summary>The file opened again for direct reads (O_NOFOLLOW in the folder, and the same file as
    /// <paramref name="buffered"/>, or not used), or null where the file system refuses O_DIRECT (tmpfs before 6.6,
    /// some FUSE file systems).</summary>
    private static RandomAccessFileDevice? TryOpenDirect(DurableContainer dc, string file, RandomAccessFileDevice buffered)
    {
        SafeFd fd;
        try
        {
            fd = dc.Folder.OpenFile(file, writable: false, direct: true);
        }
        catch (DurableFolderException)
        {
            return null;
        }

        if (DurableFolder.IdentityOf(fd) != DurableFolder.IdentityOf(buffered.FileHandle!))
        {
            fd.Dispose(); // replaced between the two opens: read through the first descriptor only
            return null;
        }

        try
        {
            return new RandomAccessFileDevice(buffered.Path, fd, DeviceMode.ReadOnly | DeviceMode.Direct);
        }
        catch (DeviceException)
        {
            fd.Dispose();
            return null;
        }
    }

    /// <summary>Whether a name from the metadata is one the broker makes: <c>o-N.ssdata</c>, N decimal.</summary>
    private static bool IsObjectFileName(string file) =>
        file.Length > "o-.ssdata".Length && file.StartsWith("o-", StringComparison.Ordinal) && file.EndsWith(".ssdata", StringComparison.Ordinal)
        && file.AsSpan(2, file.Length - "o-.ssdata".Length).IndexOfAnyExceptInRange('0', '9') < 0;

    // ---- Files --------------------------------------------------------------------------------------------

    private DurableObject Attach(DurableContainer dc, ObjectState o, string file, RandomAccessFileDevice device)
    {
        var d = new DurableObject(o, file, device, o.Segment.DataMap.Pointer + o.DataOffset, o.Segment.Record(o.RecordIndex), (int)dc.Meta.BlockSize);
        o.Durable = d;
        lock (_gate)
        {
            dc.Objects.Add(d);
        }

        return d;
    }

    private static void WriteFileHeader(RandomAccessFileDevice device, ObjectState o, int blockSize)
    {
        byte* page = (byte*)NativeMemory.AlignedAlloc(DurableFileDescriptor.HeaderSize, 4096);
        try
        {
            new Span<byte>(page, DurableFileDescriptor.HeaderSize).Clear();
            var h = (DurableFileHeader*)page;
            h->Magic = DurableFileDescriptor.Magic;
            h->Version = DurableFileDescriptor.LayoutVersion;
            h->BlockSize = blockSize;
            h->ObjectSize = o.Size;
            h->BlockCount = o.BlockCount;
            int r = WithFd(device, fd => Interop.Libc.pwrite(fd, page, DurableFileDescriptor.HeaderSize, 0) == DurableFileDescriptor.HeaderSize ? 0 : Interop.Libc.LastErrno);
            if (r != 0)
            {
                throw new BrokerError(ErrorCode.NoResources, $"cannot write the header of '{device.Path}': {Interop.Libc.StrError(r)}");
            }
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    private static void CheckFileHeader(RandomAccessFileDevice device, ObjectState o, int blockSize)
    {
        var hp = (DurableFileHeader*)NativeMemory.AllocZeroed((nuint)sizeof(DurableFileHeader));
        int r = WithFd(device, fd => Interop.Libc.pread(fd, hp, (nuint)sizeof(DurableFileHeader), 0) == sizeof(DurableFileHeader) ? 0 : Interop.Libc.EIO);
        DurableFileHeader h = *hp;
        NativeMemory.Free(hp);
        if (r != 0 || h.Magic != DurableFileDescriptor.Magic || h.Version != DurableFileDescriptor.LayoutVersion
            || h.BlockSize != blockSize || h.ObjectSize != o.Size || h.BlockCount != o.BlockCount)
        {
            throw new InvalidDataException($"'{device.Path}' is not the file of object '{o.Name}' (header: magic {h.Magic:X}, version {h.Version}, size {h.ObjectSize})");
        }
    }

    private static int WithFd(RandomAccessFileDevice device, Func<int, int> f)
    {
        var fd = device.FileHandle!;
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            return f(fd.Fd);
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>Atomic replace, inside the container's folder: temporary file, fsync, rename, fsync of the folder.</summary>
    private static void WriteMeta(DurableContainer dc) => dc.Folder.ReplaceFile(MetaFileName, dc.Meta.ToByteArray());

    private void TryWriteMeta(DurableContainer dc)
    {
        try
        {
            WriteMeta(dc);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.WriteBackFailed(_logger, dc.Meta.Name, $"metadata: {e.Message}");
        }
    }

    /// <summary>The registry, replaced atomically in the state folder (held open like a container's folder).</summary>
    private void SaveRegistry()
    {
        var dirs = _containers.Select(c => c.Directory).Concat(_unrestored);
        _stateFolder.ReplaceFile(RegistryFileName, System.Text.Encoding.UTF8.GetBytes(string.Join('\n', dirs) + "\n"));
    }
}
