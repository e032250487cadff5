using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// Every baseline as one policy over the same ops (<see cref="AttentionOps"/>: one sequence, or a batch's decode steps): a
/// <see cref="KeySelector"/> (<see cref="IBackend.SelectKeys"/>) writes a plan in the backend's memory and
/// <see cref="IBackend.SparseAttention"/> attends over it; layers run in the method's modes
/// (<see cref="BaselinePolicy.ModeOf"/>). Selectors that run in decode only attend densely in prefill, keeping their state current.
/// </summary>
internal sealed class BaselineLayers : LayerAttention
{
    /// <summary>
    /// Most bytes of a prefill plan of per-token windows (streamingllm): a chunk is selected and attended in groups of
    /// queries whose windows fit, so memory stays bounded at any context.
    /// </summary>
    private const long PlanBytes = 256L << 20;

    private readonly AttentionOps _ops;
    private readonly AttentionPolicy _policy;
    private readonly KeySelector _selector;
    private readonly SelectorState _state;
    private readonly KeyPlan _plan;

    /// <summary>The plan's head map: every head on the one shared set, or each query head on its own row.</summary>
    private readonly int[] _headMap;

    /// <summary>The <see cref="BaselineLayerMode.DenseAndSelect"/> layer that wrote the plan in this chunk, or −1.</summary>
    private int _selectedAt = -1;

    public BaselineLayers(IBackend backend, AttentionOps ops, AttentionPolicy policy, ModelConfig config, int capacity, int maxChunk)
        : base(backend)
    {
        _ops = ops;
        _policy = policy;
        _selector = BaselinePolicy.SelectorOf(policy);
        int units = _selector.Prefills ? (int)Math.Clamp(PlanBytes / ((long)_selector.Capacity(capacity, config.Heads) * sizeof(int)), 1, maxChunk) : 1;
        _state = backend.AllocateSelectorState(_selector, new KvCacheShape(ops.StateLayers(config), config.KvHeads, config.HeadDim, capacity), config.Heads);
        try
        {
            _plan = _selector.AllocatePlan(backend, config.Heads, capacity, units, ops.Sequences);
        }
        catch
        {
            _state.Dispose();
            throw;
        }
        _headMap = _selector.Selectors(config.Heads) == 1 ? new int[config.KvHeads] : [.. Enumerable.Range(0, config.Heads)];
    }

    public override void Resume(AttentionArgs args, KvCache cache)
    {
        // A batch keeps a state per sequence (layer b of the cache and of the state), which the model's layers share.
        var layers = _ops.Sequences > 1 ? Enumerable.Range(0, _ops.Sequences) : Enumerable.Range(0, cache.Shape.Layers).Where(Selects);
        foreach (int layer in layers)
        {
            Backend.UpdateSelectorState(args with { Layer = layer, StartPosition = 0 }, cache, _state);
        }
    }

    public override void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        if (args.Layer == 0)
        {
            _selectedAt = -1;
        }
        var mode = BaselinePolicy.ModeOf(_policy.Method, _policy.Baselines, args.Layer);
        if (Selects(args.Layer))
        {
            _ops.UpdateSelectorState(args, cache, _state);
        }
        if (mode == BaselineLayerMode.Dense || (args.Tokens > 1 && !_selector.Prefills))
        {
            _ops.Dense(args, q, cache, output);
            return;
        }
        switch (mode)
        {
            case BaselineLayerMode.DenseAndSelect:
                _ops.Dense(args, q, cache, output);
                _ops.SelectKeys(args, q, cache, _state, _plan);
                _selectedAt = args.Layer;
                return;
            case BaselineLayerMode.Reuse:
                if (_selectedAt < 0)
                {
                    throw new InvalidOperationException($"layer {args.Layer} reuses a selection, but no selection layer ran before it in this step");
                }
                _ops.Sparse(args, _plan, _headMap, q, cache, output);
                return;
            case BaselineLayerMode.Select when args.Tokens == 1:
                _ops.SelectKeys(args, q, cache, _state, _plan);
                _ops.Sparse(args, _plan, _headMap, q, cache, output);
                return;
            default:
                // A prefill chunk (streamingllm) in groups of queries whose plans fit; later groups start inside the
                // chunk, at a host position (prefill is never recorded, nor batched).
                for (int first = 0; first < args.Tokens; first += _plan.Units)
                {
                    int tokens = Math.Min(_plan.Units, args.Tokens - first);
                    var part = args with { Tokens = tokens, StartPosition = args.StartPosition + first, Step = first == 0 ? args.Step : null };
                    var partQ = tokens == args.Tokens ? q : q.Slice(first, tokens);
                    var partOutput = tokens == args.Tokens ? output : output.Slice(first, tokens);
                    Backend.SelectKeys(part, partQ, cache, _state, _plan);
                    Backend.SparseAttention(part, _plan, _headMap, partQ, cache, partOutput);
                }
                return;
        }
    }

    /// <summary>Whether <paramref name="layer"/> selects keys (and so keeps its selector's state current).</summary>
    private bool Selects(int layer) => BaselinePolicy.ModeOf(_policy.Method, _policy.Baselines, layer) is BaselineLayerMode.Select or BaselineLayerMode.DenseAndSelect;

    public override void Dispose()
    {
        _plan.Dispose();
        _state.Dispose();
    }
}
