using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using SharedStore.Devices;
using SharedStore.Locks;
using SharedStore.Protocol;
using SharedStore.Regions;

namespace SharedStore.Broker;

/// <summary>
/// Durable containers (docs/ARCHITECTURE.md §11): the objects' shared memory is the cache, a file per object is the
/// store. This class is the catalog (containers, their object files and metadata, the registry of folders) and the
/// entry point; the write-back pass is <see cref="DurableWriteBack"/>'s and restore <see cref="DurableRestore"/>'s. Writers mark blocks dirty in their lock records; a background thread (and <see cref="Flush"/>) writes dirty
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
internal sealed unsafe class DurableStore : IDisposable
{
    public const string MetaFileName = "container.ssmeta";
    public const string RegistryFileName = "durable-containers";
    private const int MaxFileNameTries = 64;
    private readonly DurableFolder _stateFolder; // the registry's folder, held like a container's
    private readonly ILogger _logger;
    private readonly Lock _gate = new(); // the catalog lock (LockLevel.DurableCatalog): containers, their object lists, registry
    private readonly List<DurableContainer> _containers = [];

    // Registered directories whose container could not be restored at start (damaged metadata or object file):
    // they stay registered, so a repaired container comes back at the next start instead of being dropped from the
    // registry the next time another container is created or destroyed.
    private readonly List<string> _unrestored = [];
    private readonly IDeviceAccessScheduler _scheduler;
    private readonly DurableWriteBack _writeBack;
    private readonly DurableRestore _restore;

    public DurableStore(string stateDirectory, ILogger logger)
    {
        _stateFolder = DurableFolder.Open(stateDirectory); // BrokerFolders.Prepare made it and checked it
        _logger = logger;
        _scheduler = DeviceSchedulers.Create(DeviceSchedulerKind.Auto, DeviceMode.None);
        _writeBack = new DurableWriteBack(this, _scheduler, logger);
        _restore = new DurableRestore(this, _scheduler, logger);
    }

    /// <summary>Bytes of blocks written back so far (data only).</summary>
    public long WrittenBytes => _writeBack.WrittenBytes;

    public long WriteErrors => _writeBack.WriteErrors;

    public long TornSlots => _restore.TornSlots;

    public long CorruptBlocks => _restore.CorruptBlocks;

    public string SchedulerDescription => _scheduler.SelectionReason;

    /// <summary>The durable containers now (a copy, taken under the catalog lock).</summary>
    internal List<DurableContainer> Containers()
    {
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
        {
            return [.. _containers];
        }
    }

    /// <summary>A container's object files now (a copy, taken under the catalog lock).</summary>
    internal List<DurableObject> ObjectsOf(DurableContainer dc)
    {
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
        {
            return [.. dc.Objects];
        }
    }

    // ---- Containers and objects (called under the model lock) --------------------------------------

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
            MaxMembers = (uint)c.MaxMembers,
        };
        var dc = new DurableContainer(folder, meta);
        try
        {
            if (!folder.MayWrite(who))
            {
                throw new BrokerError(ErrorCode.PermissionDenied, $"uid {who.Uid} may not write durable path '{directory}' ({folder.Describe()})");
            }

            using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
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

        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
        {
            _unrestored.Remove(directory); // emptied by its owner and reused: registered once
            _containers.Add(dc);
            SaveRegistry();
        }

        return dc;
    }

    /// <summary>Creates the object's file, new (O_CREAT|O_EXCL|O_NOFOLLOW in the container's folder), preallocated
    /// (a full disk is NoResources here, not a write-back failure later), and records it in the metadata. The caller
    /// records the returned file in its model.</summary>
    public DurableObject AddObject(DurableContainer dc, ObjectState o)
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
            int r = device.Preallocate(length);
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
        catch (Exception e) when (e is SharedStoreException or IOException or UnauthorizedAccessException)
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

        return Attach(dc, o, file, device);
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
    public void RemoveObject(DurableContainer dc, DurableObject d)
    {
        d.Close();
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
        {
            dc.Objects.Remove(d);
        }

        dc.Folder.Delete(d.FileName);
        dc.Meta.Objects.Remove(dc.Meta.Objects.FirstOrDefault(m => m.File == d.FileName));
        TryWriteMeta(dc);
    }

    /// <summary>Destroy: deletes the container's files and forgets it (its directory stays).</summary>
    public void RemoveContainer(DurableContainer dc)
    {
        foreach (var d in dc.Objects.ToList())
        {
            RemoveObject(dc, d);
        }

        dc.Folder.Delete(MetaFileName);
        dc.Folder.Sync();
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
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
        _writeBack.Stop();

        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
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

    /// <summary>Returns once every block that was dirty when it was called has been written back and fdatasynced
    /// (<see cref="DurableWriteBack.Flush"/>).</summary>
    public void Flush(DurableContainer dc, TimeSpan timeout, CancellationToken token) => _writeBack.Flush(dc, timeout, token);

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
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
        {
            _containers.Add(dc);
        }
    }

    /// <summary>A registered container that cannot be restored: closes the files opened so far (deleting nothing),
    /// forgets the container, and keeps its directory registered for the next start.</summary>
    public void AbandonRestore(string directory, DurableContainer? dc)
    {
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
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
        }

        dc?.Folder.Dispose();
    }

    /// <summary>Loads an object's blocks from its file (<see cref="DurableRestore.RestoreObject"/>); the caller records
    /// <paramref name="restored"/> in its model.</summary>
    public RestoreReport RestoreObject(DurableContainer dc, ObjectState o, string file, out DurableObject restored) =>
        _restore.RestoreObject(dc, o, file, out restored);

    // ---- Files --------------------------------------------------------------------------------------------

    /// <summary>Lists an object's file in its container (the caller records it in the model).</summary>
    internal DurableObject Attach(DurableContainer dc, ObjectState o, string file, RandomAccessFileDevice device)
    {
        var d = new DurableObject(o, file, device, o.Segment.BrokerView(o, (int)dc.Meta.BlockSize, durable: true, repair: null)); // write-back never waits
        using (LockOrder.Enter(_gate, LockLevel.DurableCatalog))
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
            var written = device.Transfer(RandomAccessOperation.Write, 0, page, DurableFileDescriptor.HeaderSize);
            int r = written.Succeeded && written.BytesTransferred == DurableFileDescriptor.HeaderSize ? 0 : written.Errno != 0 ? written.Errno : Interop.Libc.EIO;
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

    internal static void CheckFileHeader(RandomAccessFileDevice device, ObjectState o, int blockSize)
    {
        var hp = (DurableFileHeader*)NativeMemory.AllocZeroed((nuint)sizeof(DurableFileHeader));
        var read = device.Transfer(RandomAccessOperation.Read, 0, (byte*)hp, sizeof(DurableFileHeader));
        int r = read.Succeeded && read.BytesTransferred == sizeof(DurableFileHeader) ? 0 : Interop.Libc.EIO;
        DurableFileHeader h = *hp;
        NativeMemory.Free(hp);
        if (r != 0 || h.Magic != DurableFileDescriptor.Magic || h.Version != DurableFileDescriptor.LayoutVersion
            || h.BlockSize != blockSize || h.ObjectSize != o.Size || h.BlockCount != o.BlockCount)
        {
            throw new InvalidDataException($"'{device.Path}' is not the file of object '{o.Name}' (header: magic {h.Magic:X}, version {h.Version}, size {h.ObjectSize})");
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
