using System.Globalization;
using System.Text;

namespace SharedStore.Cli;

/// <summary>
/// A table written straight to standard output, in the look of Spectre.Console's square table (title centred above,
/// box-drawing borders, one space of padding). Spectre lays out every cell as a renderable: 100 000 rows of
/// <c>sharedstore ls</c> took it 4 s of CPU (17 s of wall time on a loaded 2-vCPU machine), longer than the broker took
/// to list them; this writes one line per row after one pass that measures the columns. Used for every table whose
/// rows grow with the broker's state (ls, holders).
/// </summary>
internal sealed class TextTable
{
    private readonly string _title;
    private readonly string[] _headers;
    private readonly bool[] _right;
    private readonly List<string[]> _rows = [];

    /// <param name="title">Centred above the table.</param>
    /// <param name="columns">Headers; a header starting with '&gt;' is right-aligned (the '&gt;' is not shown).</param>
    public TextTable(string title, params string[] columns)
    {
        _title = Printable(title);
        _right = [.. columns.Select(c => c.StartsWith('>'))];
        _headers = [.. columns.Select(c => c.TrimStart('>'))];
    }

    public int RowCount => _rows.Count;

    public void AddRow(params string[] cells)
    {
        if (cells.Length != _headers.Length)
        {
            throw new ArgumentException($"a row has {_headers.Length} cells, not {cells.Length}", nameof(cells));
        }

        _rows.Add([.. cells.Select(Printable)]);
    }

    /// <summary>Control characters shown as <c>\xNN</c>: a name is any UTF-8 but NUL, and another user's container
    /// name must not move the cursor, clear the screen or fake a line of this output.</summary>
    internal static string Printable(string s)
    {
        if (!s.Any(char.IsControl))
        {
            return s;
        }

        var b = new StringBuilder(s.Length + 8);
        foreach (char c in s)
        {
            if (char.IsControl(c))
            {
                b.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:X2}");
            }
            else
            {
                b.Append(c);
            }
        }

        return b.ToString();
    }

    /// <summary>Writes the table to standard output (through one buffer, flushed at the end).</summary>
    public void Write()
    {
        using var stdout = Console.OpenStandardOutput();
        using var w = new StreamWriter(stdout, new UTF8Encoding(false), 1 << 16) { NewLine = "\n" };
        Write(w);
    }

    public void Write(TextWriter w)
    {
        int[] widths = [.. _headers.Select(Width)];
        foreach (var row in _rows)
        {
            for (int i = 0; i < row.Length; i++)
            {
                widths[i] = Math.Max(widths[i], Width(row[i]));
            }
        }

        int total = widths.Sum() + (3 * widths.Length) + 1;
        int left = Math.Max(0, (total - Width(_title)) / 2);
        w.WriteLine(new string(' ', left) + _title + new string(' ', Math.Max(0, total - left - Width(_title))));
        Rule(w, widths, '┌', '┬', '┐');
        Row(w, widths, _headers);
        Rule(w, widths, '├', '┼', '┤');
        foreach (var row in _rows)
        {
            Row(w, widths, row);
        }

        Rule(w, widths, '└', '┴', '┘');
    }

    private static void Rule(TextWriter w, int[] widths, char first, char middle, char last)
    {
        var line = new StringBuilder();
        for (int i = 0; i < widths.Length; i++)
        {
            line.Append(i == 0 ? first : middle).Append('─', widths[i] + 2);
        }

        w.WriteLine(line.Append(last));
    }

    private void Row(TextWriter w, int[] widths, string[] cells)
    {
        var line = new StringBuilder();
        for (int i = 0; i < cells.Length; i++)
        {
            int pad = widths[i] - Width(cells[i]);
            line.Append("│ ");
            if (_right[i])
            {
                line.Append(' ', pad).Append(cells[i]);
            }
            else
            {
                line.Append(cells[i]).Append(' ', pad);
            }

            line.Append(' ');
        }

        w.WriteLine(line.Append('│'));
    }

    /// <summary>Terminal columns <paramref name="s"/> takes: combining marks and format characters none, East Asian wide
    /// and fullwidth characters (CJK, Hangul, fullwidth forms, most emoji) two, everything else one.</summary>
    internal static int Width(string s)
    {
        int width = 0;
        foreach (var rune in s.EnumerateRunes())
        {
            var category = Rune.GetUnicodeCategory(rune);
            if (category is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format)
            {
                continue;
            }

            width += IsWide(rune.Value) ? 2 : 1;
        }

        return width;
    }

    private static bool IsWide(int c) =>
        c is (>= 0x1100 and <= 0x115F) or (>= 0x2E80 and <= 0x303E) or (>= 0x3041 and <= 0x33FF) or (>= 0x3400 and <= 0x4DBF)
            or (>= 0x4E00 and <= 0x9FFF) or (>= 0xA000 and <= 0xA4CF) or (>= 0xAC00 and <= 0xD7A3) or (>= 0xF900 and <= 0xFAFF)
            or (>= 0xFE30 and <= 0xFE4F) or (>= 0xFF00 and <= 0xFF60) or (>= 0xFFE0 and <= 0xFFE6) or (>= 0x1F300 and <= 0x1F64F)
            or (>= 0x1F900 and <= 0x1F9FF) or (>= 0x20000 and <= 0x3FFFD);
}
