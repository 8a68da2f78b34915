namespace SharedStore.Cli.Tests;

/// <summary>The table writer behind ls and holders: Spectre's look, columns measured in terminal cells, and names that
/// cannot drive the terminal.</summary>
[TestFixture]
[Category("Cli")]
public sealed class TextTableTests
{
    [Test]
    public void Write_RightAlignedColumnAndWideCharacters_LinesHaveOneWidth()
    {
        // Contract: every line of a table is as wide as the others in terminal cells, whatever the names hold
        // (CJK and emoji take two cells, combining marks none).
        var t = new TextTable("t", "name", ">n");
        t.AddRow("abc", "1");
        t.AddRow("日本", "22");
        t.AddRow("e\u0301\U0001F600", "333");
        var w = new StringWriter();
        t.Write(w);
        string[] lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines.Select(TextTable.Width).Distinct().Count(), Is.EqualTo(1), w.ToString());
        Assert.That(lines, Does.Contain("│ 日本 │  22 │"));
    }

    [Test]
    public void AddRow_ControlCharacters_ShownEscaped()
    {
        // Contract: a name is any UTF-8 but NUL; control characters in another user's name are shown as \xNN, so
        // they cannot move the cursor, clear the screen or start a fake line.
        Assert.That(TextTable.Printable("a\nb\u001b[2J\u009b"), Is.EqualTo("a\\x0Ab\\x1B[2J\\x9B"));
        Assert.That(TextTable.Printable("plain"), Is.SameAs("plain"));
    }
}
