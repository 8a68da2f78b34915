namespace SharedStore.Native.Tests;

/// <summary>The Python package: installed offline with pip into a fresh virtual environment (Debian's python3 with
/// its numpy and pytest visible), then its pytest suite against a real broker.</summary>
[TestFixture]
public sealed class PythonTests
{
    /// <summary>Debian's interpreter: python3-pytest and python3-numpy (tools/setup.sh) are installed for it.</summary>
    public const string Python = "/usr/bin/python3";

    [Test]
    public void PipInstallOffline_ThenPytest_AllPass()
    {
        // Contract: `pip install ./bindings/python` works with no package index (--no-index) and installs a package
        // that carries the library; its tests (API, zero-copy numpy read, errors, async, another process, threads) pass.
        string venv = Path.Combine(NativeLibrary.BinDirectory, "venv");
        string scratch = BrokerProcess.NewDirectory();
        try
        {
            var r = NativeLibrary.Run([Python, "-m", "venv", "--system-site-packages", venv], null, TimeSpan.FromMinutes(2));
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            var noIndex = new Dictionary<string, string> { ["PIP_NO_INDEX"] = "1", ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1" };
            r = NativeLibrary.Run([Path.Combine(venv, "bin", "pip"), "install", "--no-index", Path.Combine(NativeLibrary.RepoRoot, "bindings", "python")],
                noIndex, TimeSpan.FromMinutes(3), scratch);
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            string venvPython = Path.Combine(venv, "bin", "python");
            r = NativeLibrary.Run([venvPython, "-c", "import sharedstore; print(sharedstore.library_path())"], null, TimeSpan.FromMinutes(1), scratch);
            Assert.That(r.Stdout.Trim(), Does.StartWith(venv).And.EndWith("sharedstore/libsharedstore.so"), "the installed package carries the library: " + r);

            using var broker = BrokerProcess.Start();
            r = NativeLibrary.Run(
                [venvPython, "-m", "pytest", "-q", "-p", "no:cacheprovider", Path.Combine(NativeLibrary.RepoRoot, "bindings", "python", "tests")],
                SeedCallTests.Env(broker), TimeSpan.FromMinutes(5), scratch);
            TestContext.Progress.WriteLine(r.Stdout.Split('\n').LastOrDefault(l => l.Contains("passed", StringComparison.Ordinal)) ?? "");
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            Assert.That(r.Stdout, Does.Match(@"\d+ passed"), r.ToString());
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }
}
