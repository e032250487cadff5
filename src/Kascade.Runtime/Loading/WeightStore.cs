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
                if (_tensors.TryGetValue(name, out var other))
                {
                    throw new KascadeException($"tensor '{name}' is in both {Path.GetFileName(other.File.Path)} and {Path.GetFileName(f.Path)}");
                }
                _tensors[name] = (f, info);
            }
        }
    }

    public IEnumerable<string> Names => _tensors.Keys;

    public static WeightStore Open(string directory)
    {
        string index = Path.Combine(directory, "model.safetensors.index.json");
        string single = Path.Combine(directory, "model.safetensors");
        IReadOnlyDictionary<string, string>? weightMap = null;
        IEnumerable<string> shardNames;
        if (File.Exists(index))
        {
            weightMap = ReadIndex(index);
            shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
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
            var store = new WeightStore(files);
            foreach (var (tensor, shard) in weightMap ?? new Dictionary<string, string>())
            {
                if (!store._tensors.TryGetValue(tensor, out var entry) || Path.GetFileName(entry.File.Path) != shard)
                {
                    throw new KascadeException($"model.safetensors.index.json puts tensor '{tensor}' in {shard}, but {shard} does not hold it");
                }
            }
            return store;
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }
    }

    /// <summary>
    /// The index's <c>weight_map</c>: tensor name → shard file. A shard must be a plain file name beside the index, so a
    /// hostile index cannot point the loader at files elsewhere.
    /// </summary>
    private static Dictionary<string, string> ReadIndex(string path)
    {
        var (doc, root) = JsonFields.Load(path);
        using (doc)
        {
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            var weights = root.Object("weight_map");
            foreach (var p in weights.Properties)
            {
                string shard = JsonFields.AsString(p.Value, weights.Where(p.Name));
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or ".." || shard.Contains('\\') || shard.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
                {
                    throw weights.Error(p.Name, $"names '{shard}', which is not a file name in the model directory");
                }
                map[p.Name] = shard;
            }
            return map.Count > 0 ? map : throw root.Error("weight_map", "is empty");
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
        var dtype = entry.Info.DType ?? throw new KascadeException($"tensor '{name}' is {entry.Info.DTypeName}; supported: BF16, F16, F32");
        return new WeightSource(name, dtype, rows, cols, entry.File.Pointer(entry.Info));
    }

    /// <summary>
    /// Throws when the checkpoint holds tensors outside <paramref name="used"/>: a config that does not describe the
    /// checkpoint (fewer layers than it has, missing biases) would otherwise run a different model than the file's.
    /// Buffers HF itself ignores (<c>rotary_emb.inv_freq</c>) and a tied <c>lm_head.weight</c> are allowed.
    /// </summary>
    public void CheckAllUsed(IReadOnlySet<string> used, ModelConfig config)
    {
        var unused = _tensors.Keys
            .Where(n => !used.Contains(n) && !n.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) && !(config.TieWordEmbeddings && n == "lm_head.weight"))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (unused.Count == 0)
        {
            return;
        }
        var extraLayers = unused
            .Select(n => n.StartsWith("model.layers.", StringComparison.Ordinal) && int.TryParse(n.Split('.')[2], out int l) ? l : -1)
            .Where(l => l >= config.Layers)
            .ToList();
        if (extraLayers.Count > 0)
        {
            throw new KascadeException($"config.json has num_hidden_layers = {config.Layers}, but the checkpoint holds layers up to {extraLayers.Max()} (model.layers.{extraLayers.Max()}.*)");
        }
        string shown = string.Join(", ", unused.Take(3)) + (unused.Count > 3 ? $" and {unused.Count - 3} more" : "");
        throw new KascadeException($"the checkpoint holds tensors this {config.ArchitectureName} config does not use: {shown}; config.json does not describe these weights");
    }

    public void Dispose() => _files.ForEach(f => f.Dispose());
}
