using Kascade.Core;
using Kascade.Runtime.Loading;

namespace Kascade.Runtime;

/// <summary>The weights of one decoder layer as backend weights (biases and q/k norms only where the architecture has them).</summary>
public sealed record LayerWeights(
    Weight InputNorm,
    Weight Q,
    Weight K,
    Weight V,
    Weight O,
    Weight? QBias,
    Weight? KBias,
    Weight? VBias,
    Weight? OBias,
    Weight? QNorm,
    Weight? KNorm,
    Weight PostAttentionNorm,
    Weight Gate,
    Weight Up,
    Weight Down);

/// <summary>
/// A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) on one backend. The forward pass is written once here
/// against <see cref="IBackend"/>; architectures differ only by the flags of <see cref="ModelConfig"/>.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    private readonly List<Weight> _owned = [];

    private LlamaModel(ModelConfig config, IBackend backend)
    {
        Config = config;
        Backend = backend;
    }

    public ModelConfig Config { get; }

    public IBackend Backend { get; }

    /// <summary>
    /// When non-finite logits stop a session, run the tokens again layer by layer to name the first layer where NaN or
    /// infinity appears (<see cref="Diagnostics.NonFiniteProbe"/>; slow: a diagnostic, the CLI's <c>--verbose</c>).
    /// </summary>
    public bool LocateNonFinite { get; set; }

    internal Weight Embedding { get; private set; } = null!;

    internal Weight FinalNorm { get; private set; } = null!;

    internal Weight LmHead { get; private set; } = null!;

    internal LayerWeights[] Layers { get; private set; } = [];

    /// <summary>Binds every tensor the config implies, checking names and shapes; the weights stay memory-mapped in <paramref name="store"/>.</summary>
    public static LlamaModel Load(ModelConfig config, WeightStore store, IBackend backend)
    {
        // Every name, shape and dtype is checked, and the checkpoint must hold nothing else, before a byte is uploaded.
        var used = new HashSet<string>(StringComparer.Ordinal);
        new LlamaModel(config, backend).Bind((name, rows, cols) =>
        {
            used.Add(name);
            return new CheckedWeight(store.Get(name, rows, cols));
        });
        store.CheckAllUsed(used, config);
        return Load(config, backend, (name, rows, cols) => backend.LoadWeight(store.Get(name, rows, cols)));
    }

    /// <summary>
    /// A model of <paramref name="config"/>'s shape with seeded random weights made on the backend (no file): how
    /// speed is measured at full scale (e.g. Llama-3.1-8B) where no checkpoint can be downloaded. Matrices are
    /// uniform in ±1/√cols, norm weights 1 ± 0.1, biases ± 0.1.
    /// </summary>
    public static LlamaModel Random(ModelConfig config, IBackend backend, ulong seed = 1) =>
        Load(config, backend, (name, rows, cols) => rows == 1
            ? backend.RandomWeight(name, rows, cols, name.EndsWith("bias", StringComparison.Ordinal) ? 0f : 1f, 0.1f, seed)
            : backend.RandomWeight(name, rows, cols, 0f, 1f / MathF.Sqrt(cols), seed));

    private static LlamaModel Load(ModelConfig config, IBackend backend, Func<string, int, int, Weight> bind)
    {
        if (backend.Supports(config) is { Count: > 0 } reasons)
        {
            throw new KascadeException($"the {backend.Name} backend cannot run this model: {string.Join("; ", reasons)}");
        }
        var model = new LlamaModel(config, backend);
        try
        {
            model.Bind(bind);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private void Bind(Func<string, int, int, Weight> bind)
    {
        Weight Get(string name, int rows, int cols)
        {
            var w = bind(name, rows, cols);
            _owned.Add(w);
            return w;
        }

        var c = Config;
        Embedding = Get("model.embed_tokens.weight", c.VocabSize, c.HiddenSize);
        FinalNorm = Get("model.norm.weight", 1, c.HiddenSize);
        LmHead = c.TieWordEmbeddings ? Embedding : Get("lm_head.weight", c.VocabSize, c.HiddenSize);
        bool outputBias = c.AttentionBias && c.Architecture != ModelArchitecture.Qwen2;   // Qwen2 biases q, k and v only
        Layers = new LayerWeights[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Weight? Optional(bool present, string name, int rows, int cols) => present ? Get(p + name, rows, cols) : null;
            Layers[l] = new LayerWeights(
                InputNorm: Get(p + "input_layernorm.weight", 1, c.HiddenSize),
                Q: Get(p + "self_attn.q_proj.weight", c.QDim, c.HiddenSize),
                K: Get(p + "self_attn.k_proj.weight", c.KvDim, c.HiddenSize),
                V: Get(p + "self_attn.v_proj.weight", c.KvDim, c.HiddenSize),
                O: Get(p + "self_attn.o_proj.weight", c.HiddenSize, c.QDim),
                QBias: Optional(c.AttentionBias, "self_attn.q_proj.bias", 1, c.QDim),
                KBias: Optional(c.AttentionBias, "self_attn.k_proj.bias", 1, c.KvDim),
                VBias: Optional(c.AttentionBias, "self_attn.v_proj.bias", 1, c.KvDim),
                OBias: Optional(outputBias, "self_attn.o_proj.bias", 1, c.HiddenSize),
                QNorm: Optional(c.QkNorm, "self_attn.q_norm.weight", 1, c.HeadDim),
                KNorm: Optional(c.QkNorm, "self_attn.k_norm.weight", 1, c.HeadDim),
                PostAttentionNorm: Get(p + "post_attention_layernorm.weight", 1, c.HiddenSize),
                Gate: Get(p + "mlp.gate_proj.weight", c.IntermediateSize, c.HiddenSize),
                Up: Get(p + "mlp.up_proj.weight", c.IntermediateSize, c.HiddenSize),
                Down: Get(p + "mlp.down_proj.weight", c.HiddenSize, c.IntermediateSize));
        }
    }

    /// <summary>
    /// A sequence's state: KV cache for <paramref name="capacity"/> positions and activations for chunks of up to
    /// <paramref name="maxChunk"/> tokens, attending as <paramref name="policy"/> says (dense by default).
    /// </summary>
    public InferenceSession CreateSession(int capacity, int maxChunk = 512, AttentionPolicy? policy = null, ILayerObserver? observer = null) =>
        CreateSession(capacity, maxChunk, policy, observer, probe: false);

    internal InferenceSession CreateSession(int capacity, int maxChunk, AttentionPolicy? policy, ILayerObserver? observer, bool probe)
    {
        if (capacity > Config.MaxPositions)
        {
            throw new KascadeException($"{capacity} positions exceed the model's context of {Config.MaxPositions}");
        }
        policy ??= AttentionPolicy.Dense;
        if (!Backend.Runs(policy.Method))
        {
            throw new KascadeException($"attention '{policy.Info.Name}' does not run on {Backend.Name} yet; run it on the CPU (--device cpu). `kascade methods` lists where each method runs");
        }
        if (policy.NeedsSchedule)
        {
            var schedule = policy.Schedule ?? throw new KascadeException($"attention '{policy.Method}' needs a Kascade schedule");
            if (schedule.Validate(Config) is { Count: > 0 } problems)
            {
                throw new KascadeException($"the schedule does not fit this model: {string.Join("; ", problems)}");
            }
        }
        if (!(policy.TopKPercent > 0 && policy.TopKPercent <= 100))
        {
            throw new KascadeException($"top-k percent {policy.TopKPercent} must be in (0, 100]");
        }
        if (policy.Method != AttentionMethod.Dense && maxChunk >= TopKBudget.TileSize)
        {
            // Sparse policies pool each 32-query tile; chunks that are whole tiles keep every tile in one chunk, so the
            // selection does not depend on the chunking. (A chunk starting inside a tile pools over the queries it has.)
            maxChunk = maxChunk / TopKBudget.TileSize * TopKBudget.TileSize;
        }
        return new InferenceSession(this, capacity, Math.Min(maxChunk, capacity), policy, observer) { IsProbe = probe };
    }

    public void Dispose()
    {
        _owned.ForEach(w => w.Dispose());
        _owned.Clear();
    }

    /// <summary>A checkpoint tensor whose name, shape and dtype were checked; it holds nothing.</summary>
    private sealed class CheckedWeight(WeightSource source) : Weight(source.Name, source.DType, source.Rows, source.Cols)
    {
        public override void Dispose()
        {
        }
    }
}
