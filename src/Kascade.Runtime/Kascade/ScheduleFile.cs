using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Kascade.Core;

namespace Kascade.Runtime.Kascade;

/// <summary>
/// Reads and writes <c>kascade-schedule.json</c> (our format: <see cref="KascadeSchedule"/> in snake_case JSON), and
/// imports the official repository's head maps (<c>.npy</c> int32 <c>[layers, kvHeads]</c> plus an anchor list).
/// </summary>
public static class ScheduleFile
{
    public static void Save(KascadeSchedule schedule, string path) =>
        File.WriteAllText(path, JsonSerializer.Serialize(schedule, ScheduleJson.Default.KascadeSchedule));

    /// <summary>Loads and validates a schedule for <paramref name="config"/>; every problem is named in one message.</summary>
    public static KascadeSchedule Load(string path, ModelConfig config)
    {
        if (!File.Exists(path))
        {
            throw new KascadeException($"schedule file not found: {path}");
        }
        KascadeSchedule? schedule;
        try
        {
            schedule = JsonSerializer.Deserialize(File.ReadAllBytes(path), ScheduleJson.Default.KascadeSchedule);
        }
        catch (JsonException e)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is not a valid schedule ({e.Message})");
        }
        if (schedule is null)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is empty");
        }
        var missing = new List<string>();
        if (schedule.Model is null)
        {
            missing.Add("model");
        }
        if (schedule.Anchors is null)
        {
            missing.Add("anchors");
        }
        if (schedule.HeadMap is null || schedule.HeadMap.Any(r => r is null))
        {
            missing.Add("head_map");
        }
        if (missing.Count > 0)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is missing {string.Join(", ", missing)}");
        }
        if (schedule.Provenance is { } provenance && AnchorObjectives.Parse(provenance.Objective) is null)
        {
            throw new KascadeException($"{Path.GetFileName(path)}: provenance.objective '{provenance.Objective}' is none of {string.Join(", ", AnchorObjectives.Names)}");
        }
        if (schedule.Validate(config) is { Count: > 0 } problems)
        {
            throw new KascadeException($"{Path.GetFileName(path)} does not fit this model: {string.Join("; ", problems)}");
        }
        return schedule;
    }

    /// <summary>A schedule from the official repository's head map (<c>.npy</c>, int32 or int64 <c>[layers, kvHeads]</c>) and anchors.</summary>
    public static KascadeSchedule ImportOfficial(string npyPath, IReadOnlyList<int> anchors, ModelConfig config, string configHash, double topKPercent = 10)
    {
        var (shape, values) = Npy.ReadIntegers(npyPath);
        if (shape.Length != 2 || shape[0] != config.Layers || shape[1] != config.KvHeads)
        {
            throw new KascadeException($"{Path.GetFileName(npyPath)} has shape ({string.Join(", ", shape)}); the model needs ({config.Layers}, {config.KvHeads})");
        }
        var map = Enumerable.Range(0, config.Layers)
            .Select(l => (IReadOnlyList<int>)(anchors.Contains(l) ? Enumerable.Range(0, config.KvHeads).ToArray() : values.Skip(l * config.KvHeads).Take(config.KvHeads).ToArray()))
            .ToArray();
        var schedule = new KascadeSchedule(Identity(config, configHash), anchors, map, topKPercent,
            Provenance: new CalibrationProvenance($"imported from {Path.GetFileName(npyPath)}", 0, 0, 0, DateTimeOffset.UtcNow, ToolVersion));
        if (schedule.Validate(config) is { Count: > 0 } problems)
        {
            throw new KascadeException($"imported schedule does not fit this model: {string.Join("; ", problems)}");
        }
        return schedule;
    }

    public static ModelIdentity Identity(ModelConfig config, string configHash) =>
        new(config.ArchitectureName, config.Layers, config.Heads, config.KvHeads, configHash);

    /// <summary>SHA-256 of <c>config.json</c> and the weights index (or the single weights file's size), hex.</summary>
    public static string ConfigHash(string modelDirectory)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(File.ReadAllBytes(Path.Combine(modelDirectory, "config.json")));
        string index = Path.Combine(modelDirectory, "model.safetensors.index.json");
        string single = Path.Combine(modelDirectory, "model.safetensors");
        if (File.Exists(index))
        {
            sha.AppendData(File.ReadAllBytes(index));
        }
        else if (File.Exists(single))
        {
            using var weights = File.OpenRead(single);   // the target's length where the file is a link (a hub cache snapshot)
            sha.AppendData(Encoding.UTF8.GetBytes(weights.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
    }

    public static string ToolVersion => "kascade " + (typeof(ScheduleFile).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");
}

// Named literals ("NaN") are read and written so that a statistic of the calibration that came out non-finite never
// loses the schedule it belongs to; the budget itself is checked by KascadeSchedule.Validate, which refuses a NaN.
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(KascadeSchedule))]
internal sealed partial class ScheduleJson : JsonSerializerContext;
