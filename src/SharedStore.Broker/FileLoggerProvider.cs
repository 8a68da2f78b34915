using Microsoft.Extensions.Logging;

namespace SharedStore.Broker;

/// <summary>
/// Appends log lines to one file (<c>--log FILE</c>): <c>TIMESTAMP LEVEL [EventName] message</c>, flushed per line so
/// a broker that is killed loses nothing it logged. Shared by every category; a lock orders the lines.
/// </summary>
internal sealed class FileLoggerProvider : ILoggerProvider
{
    private readonly StreamWriter _writer;
    private readonly LogLevel _minimum;

    public FileLoggerProvider(string path, LogLevel minimum)
    {
        _writer = new StreamWriter(path, append: true) { AutoFlush = true };
        _minimum = minimum;
    }

    public ILogger CreateLogger(string categoryName) => new FileLogger(this);

    public void Dispose()
    {
        lock (_writer)
        {
            _writer.Dispose();
        }
    }

    private void Write(LogLevel level, EventId id, string message, Exception? exception)
    {
        string line = exception is null
            ? string.Concat(DateTime.UtcNow.ToString("O"), " ", Short(level), " [", id.Name ?? id.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "] ", message)
            : string.Concat(DateTime.UtcNow.ToString("O"), " ", Short(level), " [", id.Name ?? "", "] ", message, Environment.NewLine, exception.ToString());
        lock (_writer)
        {
            try
            {
                _writer.WriteLine(line);
            }
            catch (ObjectDisposedException)
            {
                // a message logged during shutdown after the provider was disposed: nowhere to write it
            }
        }
    }

    private static string Short(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => "none",
    };

    private sealed class FileLogger(FileLoggerProvider provider) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= provider._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                provider.Write(logLevel, eventId, formatter(state, exception), exception);
            }
        }
    }
}
