using System.Text.RegularExpressions;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// Finds the model directory a user names: a directory holding <c>config.json</c>; a Hugging Face hub cache entry
/// (<c>models--org--name</c>, resolved through <c>refs/main</c> to its snapshot, whose files are symbolic links into
/// <c>blobs/</c>); or a hub id such as <c>HuggingFaceTB/SmolLM2-135M</c>, looked up in the local hub cache
/// (<c>$HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>). Nothing is downloaded.
/// </summary>
public static partial class ModelLocation
{
    /// <summary>The directory <paramref name="nameOrPath"/> names; throws naming what was looked for when there is none.</summary>
    public static string Resolve(string nameOrPath) => Resolve(nameOrPath, HubCache);

    /// <summary>Like <see cref="Resolve(string)"/> with hub ids looked up in <paramref name="hubCache"/>.</summary>
    public static string Resolve(string nameOrPath, string hubCache)
    {
        if (Directory.Exists(nameOrPath))
        {
            return IsCacheEntry(nameOrPath) && !File.Exists(Path.Combine(nameOrPath, "config.json")) ? Snapshot(nameOrPath) : nameOrPath;
        }
        if (HubId().IsMatch(nameOrPath))
        {
            string entry = Path.Combine(hubCache, "models--" + nameOrPath.Replace("/", "--", StringComparison.Ordinal));
            if (Directory.Exists(entry))
            {
                return Snapshot(entry);
            }
            throw new KascadeException($"model directory not found: {nameOrPath} (not a directory, and the Hugging Face cache {hubCache} has no {Path.GetFileName(entry)})");
        }
        throw new KascadeException($"model directory not found: {nameOrPath}");
    }

    /// <summary>The local hub cache, as huggingface_hub finds it (<c>HUGGINGFACE_HUB_CACHE</c> is its older name).</summary>
    public static string HubCache =>
        Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } cache ? cache
        : Environment.GetEnvironmentVariable("HUGGINGFACE_HUB_CACHE") is { Length: > 0 } legacy ? legacy
        : Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home ? Path.Combine(home, "hub")
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");

    /// <summary>
    /// How to call the model at <paramref name="directory"/> in reports: <c>org/name</c> for a hub cache snapshot
    /// (<c>…/models--org--name/snapshots/REV</c>), else the directory's name.
    /// </summary>
    public static string DisplayName(string directory)
    {
        var dir = new DirectoryInfo(Path.TrimEndingDirectorySeparator(directory));
        return dir.Parent is { Name: "snapshots", Parent: { } entry } && entry.Name.StartsWith("models--", StringComparison.Ordinal)
            ? entry.Name["models--".Length..].Replace("--", "/", StringComparison.Ordinal)
            : dir.Name;
    }

    private static bool IsCacheEntry(string directory) => Directory.Exists(Path.Combine(directory, "snapshots"));

    /// <summary>The snapshot <c>refs/main</c> names, or the only snapshot there is.</summary>
    private static string Snapshot(string entry)
    {
        string snapshots = Path.Combine(entry, "snapshots");
        string refMain = Path.Combine(entry, "refs", "main");
        if (File.Exists(refMain))
        {
            string revision = File.ReadAllText(refMain).Trim();
            string snapshot = Path.Combine(snapshots, revision);
            return revision.Length > 0 && revision == Path.GetFileName(revision) && Directory.Exists(snapshot)
                ? snapshot
                : throw new KascadeException($"{refMain} names revision '{revision}', which is not in {snapshots}");
        }
        var all = Directory.Exists(snapshots) ? Directory.GetDirectories(snapshots) : [];
        return all.Length == 1
            ? all[0]
            : throw new KascadeException($"{entry} is a Hugging Face cache entry with {all.Length} snapshots and no refs/main; pass one of its snapshots/<revision> directories");
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex HubId();
}
