namespace Kascade.Testing;

/// <summary>Where the committed fixtures and the embedded model are, found from the repository root.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRoot();

    public static string InstrumentModel => Path.Combine(RepoRoot, "models", "kascade-instrument-21m");

    public static string Fixtures => Path.Combine(RepoRoot, "tests", "data", "fixtures");

    public static string Tokenizers => Path.Combine(RepoRoot, "tests", "data", "tokenizers");

    public static string TinyModel(string variant) => Path.Combine(Fixtures, "tiny", variant);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Kascade.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("Kascade.slnx not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>A directory under the temp folder, deleted on dispose.</summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = Directory.CreateTempSubdirectory("kascade-test-").FullName;
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
