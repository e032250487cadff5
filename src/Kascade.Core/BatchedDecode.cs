namespace Kascade.Core;

/// <summary>
/// Decode attention for a batch of sequences of one length (the paper's batch-64 decode, issue 15 §3): query row b of
/// <c>args.Tokens</c> = batch is sequence b's decode step at position <c>StartPosition</c> (read from <c>args.Step</c>
/// when given, as <see cref="AttentionArgs"/>) and attends over sequence b's first <c>StartPosition + 1</c> keys, which
/// are layer b of <c>cache</c> (a cache whose layers are the batch's sequences: <c>Layers ≥ batch</c>; <c>args.Layer</c>
/// is ignored). Plans hold a unit per sequence: sequence b's selectors are rows <c>b · Selectors + …</c>, a head map
/// names selectors within a unit (a map per KV head). q and output fp32 <c>[batch, Heads·HeadDim]</c>. Each op gives
/// what its <see cref="IBackend"/> counterpart gives for each sequence alone (the CPU reference runs it so; the GPU in
/// one launch per kernel, equal up to the rounding of its split of the keys, and plans up to score ties).
/// </summary>
public interface IBatchedDecode
{
    /// <summary>Whether <see cref="BatchedAnchorAttention"/> and <see cref="BatchedSparseAttention"/> run a batch of this shape (heads, KV heads, head dim).</summary>
    bool RunsBatchedKascade(AttentionArgs args);

    /// <summary><see cref="IBackend.Attention"/> of each sequence's decode step.</summary>
    void BatchedDecodeAttention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary><see cref="IBackend.AnchorAttention"/> of each sequence's decode step: plan unit b is sequence b's selection.</summary>
    void BatchedAnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output);

    /// <summary>
    /// <see cref="IBackend.SparseAttention"/> of each sequence's decode step over plan unit b through <paramref name="headMap"/>
    /// (a selector per KV head, or per query head as quest's and sparcas's plans).
    /// </summary>
    void BatchedSparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>Whether <see cref="BatchedSelectKeys"/> and the sparse attention over its plan run a batch of this shape under <paramref name="selector"/>.</summary>
    bool RunsBatchedSelector(AttentionArgs args, KeySelector selector);

    /// <summary>
    /// <see cref="IBackend.UpdateSelectorState"/> for each sequence's decode step: sequence b's state is layer b of
    /// <paramref name="state"/> (a state whose layers are the batch's sequences, as the cache's are).
    /// </summary>
    void BatchedUpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state);

    /// <summary><see cref="IBackend.SelectKeys"/> of each sequence's decode step: plan unit b from sequence b's keys, query and state (layer b).</summary>
    void BatchedSelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan);
}

/// <summary>The checks every <see cref="IBatchedDecode"/> makes of its arguments.</summary>
public static class BatchedDecodeArgs
{
    /// <summary>
    /// Refuses a batch whose sequences the cache or the selector state does not hold (a layer per sequence each), a state
    /// of another shape than the batch's heads and cache, or a plan, when given, that does not hold the selector's decode
    /// rows for a unit per sequence (<see cref="KeySelector.CheckPlan"/>).
    /// </summary>
    public static void CheckSelector(AttentionArgs args, KvCache cache, SelectorState state, KeyPlan? plan = null)
    {
        if (args.Tokens < 1 || cache.Shape.Layers < args.Tokens || state.Shape.Layers < args.Tokens)
        {
            throw new ArgumentException($"a batch of {args.Tokens} needs a cache and a selector state of a layer per sequence, not {cache.Shape.Layers} and {state.Shape.Layers}");
        }
        if (args.StartPosition + 1 > cache.Shape.Capacity)
        {
            throw new ArgumentException($"a decode step at position {args.StartPosition} does not fit a cache of {cache.Shape.Capacity} positions");
        }
        if (state.Shape.Capacity < cache.Shape.Capacity || state.Shape.KvHeads != args.KvHeads || state.Shape.HeadDim != args.HeadDim || state.Heads != args.Heads)
        {
            throw new ArgumentException($"a selector state of {state.Shape} and {state.Heads} heads does not serve a batch of {args.Heads} heads over a cache of {cache.Shape}");
        }
        if (plan is not null)
        {
            if (plan.Units < args.Tokens)
            {
                throw new ArgumentException($"a batch of {args.Tokens} needs a plan of at least {args.Tokens} units (one per sequence), not {plan.Units}");
            }
            state.Selector.CheckPlan(args with { Tokens = 1 }, plan);
        }
    }

    /// <summary>
    /// Refuses a batch whose sequences the cache (or the plan, when given) does not hold, or whose queries
    /// <paramref name="q"/> or <paramref name="output"/> (fp32 <c>[batch, Heads·HeadDim]</c>; none for a selector) are not a row per sequence.
    /// </summary>
    public static void Check(AttentionArgs args, KvCache cache, DeviceTensor q, DeviceTensor? output, KeyPlan? plan = null)
    {
        int width = args.Heads * args.HeadDim;
        output ??= q;
        if (q.Rows < args.Tokens || output.Rows < args.Tokens || q.Cols != width || output.Cols != width)
        {
            throw new ArgumentException($"a batch of {args.Tokens} needs queries and an output of [{args.Tokens}, {width}], not [{q.Rows}, {q.Cols}] and [{output.Rows}, {output.Cols}]");
        }
        if (args.Tokens < 1 || cache.Shape.Layers < args.Tokens)
        {
            throw new ArgumentException($"a batch of {args.Tokens} needs a cache of at least {args.Tokens} sequences (layers), not {cache.Shape.Layers}");
        }
        if (args.StartPosition + 1 > cache.Shape.Capacity)
        {
            throw new ArgumentException($"a decode step at position {args.StartPosition} does not fit a cache of {cache.Shape.Capacity} positions");
        }
        if (plan is not null && plan.Units < args.Tokens)
        {
            throw new ArgumentException($"a batch of {args.Tokens} needs a plan of at least {args.Tokens} units (one per sequence), not {plan.Units}");
        }
    }
}
