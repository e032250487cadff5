using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// All tensors of a model directory: one <c>model.safetensors</c>, or the shards a
/// <c>model.safetensors.index.json</c> names, each memory-mapped once.
/// </summary>
public sealed class WeightStore : IDisposable
{
    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, (SafeTensorsFile File, SafeTensorInfo Info)> _tensors;

    private WeightStore(List<SafeTensorsFile> files)
    {
        _files = files;
        _tensors = new(StringComparer.Ordinal);
        foreach (var f in files)
        {
            foreach (var (name, info) in f.Tensors)
            {
                _tensors[name] = (f, info);
            }
        }
    }

    public IEnumerable<string> Names => _tensors.Keys;

    public static WeightStore Open(string directory)
    {
        string index = Path.Combine(directory, "model.safetensors.index.json");
        string single = Path.Combine(directory, "model.safetensors");
        IEnumerable<string> shardNames;
        if (File.Exists(index))
        {
            shardNames = ReadIndex(index);
        }
        else if (File.Exists(single))
        {
            shardNames = ["model.safetensors"];
        }
        else
        {
            throw new KascadeException($"no weights in {directory}: expected model.safetensors or model.safetensors.index.json");
        }
        var files = new List<SafeTensorsFile>();
        try
        {
            foreach (var shard in shardNames)
            {
                files.Add(SafeTensorsFile.Open(Path.Combine(directory, shard)));
            }
            return new WeightStore(files);
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }
    }

    private static IEnumerable<string> ReadIndex(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.GetProperty("weight_map").EnumerateObject()
                .Select(p => p.Value.GetString() ?? throw new KascadeException($"{Path.GetFileName(path)}: tensor '{p.Name}' maps to no file"))
                .Distinct(StringComparer.Ordinal)
                .Order(StringComparer.Ordinal)
                .ToList();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is not a valid safetensors index ({e.Message})");
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>
    /// The tensor <paramref name="name"/> as a backend weight source, checked against the expected shape
    /// (<c>[rows, cols]</c>, or <c>[cols]</c> for a vector with rows = 1).
    /// </summary>
    public WeightSource Get(string name, int rows, int cols)
    {
        if (!_tensors.TryGetValue(name, out var entry))
        {
            throw new KascadeException($"tensor '{name}' is missing from the checkpoint");
        }
        var shape = entry.Info.Shape;
        bool matches = rows == 1 && shape.Count == 1
            ? shape[0] == cols
            : shape.Count == 2 && shape[0] == rows && shape[1] == cols;
        if (!matches)
        {
            string expected = rows == 1 ? $"[{cols}]" : $"[{rows}, {cols}]";
            throw new KascadeException($"tensor '{name}' has shape [{string.Join(", ", shape)}]; the config implies {expected}");
        }
        return new WeightSource(name, entry.Info.DType, rows, cols, entry.File.Pointer(entry.Info));
    }

    public void Dispose() => _files.ForEach(f => f.Dispose());
}
