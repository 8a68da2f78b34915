using SharedStore.Protocol;

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
