namespace SharedStore;

/// <summary>Where a broker listens. Resolution order: an explicit path (option), then the environment variable
/// <c>SHAREDSTORE_SOCKET</c>, then the per-user default <c>$XDG_RUNTIME_DIR/sharedstore/broker.sock</c> (or
/// <c>/tmp/sharedstore-UID/broker.sock</c> without XDG_RUNTIME_DIR). <see cref="SystemSocketPath"/> is the
/// system-wide broker for multi-user use.</summary>
public static class BrokerEndpoint
{
    /// <summary>The environment variable that overrides the default socket path.</summary>
    public const string EnvironmentVariable = "SHAREDSTORE_SOCKET";

    /// <summary>The system-wide broker's socket, for containers shared between users.</summary>
    public const string SystemSocketPath = "/run/sharedstore/broker.sock";

    /// <summary>The socket path to use when none was given explicitly.</summary>
    public static string DefaultSocketPath
    {
        get
        {
            string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
            if (!string.IsNullOrEmpty(env))
            {
                return env;
            }

            string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
            return !string.IsNullOrEmpty(runtime) && Directory.Exists(runtime)
                ? Path.Combine(runtime, "sharedstore", "broker.sock")
                : Path.Combine("/tmp", $"sharedstore-{Interop.Libc.getuid()}", "broker.sock");
        }
    }

    /// <summary>The path given, or the default.</summary>
    public static string Resolve(string? explicitPath) =>
        string.IsNullOrEmpty(explicitPath) ? DefaultSocketPath : explicitPath;
}
