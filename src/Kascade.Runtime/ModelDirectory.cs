using Kascade.Core;
using Kascade.Runtime.Loading;
using Kascade.Runtime.Tokenization;

namespace Kascade.Runtime;

/// <summary>A Hugging Face model directory opened on a backend: config, tokenizer and memory-mapped weights.</summary>
public sealed class ModelDirectory : IDisposable
{
    private readonly WeightStore _weights;

    private ModelDirectory(string path, ModelConfig config, TextTokenizer tokenizer, WeightStore weights, LlamaModel model)
    {
        Path = path;
        Config = config;
        Tokenizer = tokenizer;
        _weights = weights;
        Model = model;
    }

    public string Path { get; }

    /// <summary>How reports name the model: <c>org/name</c> for a hub cache snapshot, else the directory's name.</summary>
    public string Name => ModelLocation.DisplayName(Path);

    public ModelConfig Config { get; }

    public TextTokenizer Tokenizer { get; }

    public LlamaModel Model { get; }

    /// <summary>
    /// Opens <paramref name="path"/>: a model directory, a Hugging Face cache entry or a hub id in the local cache
    /// (<see cref="ModelLocation"/>), with the config, the tokenizer and the weights each checked against the others.
    /// </summary>
    public static ModelDirectory Open(string path, IBackend backend)
    {
        path = ModelLocation.Resolve(path);
        var config = ConfigLoader.Load(path);
        var tokenizer = TextTokenizer.Load(path);
        var weights = WeightStore.Open(path);
        try
        {
            return new ModelDirectory(path, config, tokenizer, weights, LlamaModel.Load(config, weights, backend));
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Model.Dispose();
        _weights.Dispose();
    }
}
