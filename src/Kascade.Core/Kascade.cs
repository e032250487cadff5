namespace Kascade.Core;

/// <summary>The Top-k budget of Kascade (DESIGN §3), one function for every path.</summary>
public static class TopKBudget
{
    /// <summary>Query positions per prefill tile (the paper's 32-query tile).</summary>
    public const int TileSize = 32;

    /// <summary>
    /// Keys kept out of <paramref name="visibleKeys"/> candidates at <paramref name="percent"/>:
    /// <c>k(n) = min(n, roundUp128(max(128, floor(p/100 · n))))</c>. The paper's reference uses
    /// <c>max(128, p%·n) − 32</c> unrounded; its kernels round up to 128, which we use everywhere.
    /// </summary>
    public static int For(int visibleKeys, double percent)
    {
        if (visibleKeys <= 0)
        {
            return 0;
        }
        long raw = Math.Max(128L, (long)Math.Floor(percent / 100.0 * visibleKeys));
        long rounded = (raw + 127) / 128 * 128;
        return (int)Math.Min(visibleKeys, rounded);
    }

    /// <summary>
    /// Keys an anchor keeps for <paramref name="tile"/> of a chunk that ends at <paramref name="visibleKeys"/> keys
    /// (a decode step is a one-query tile whose candidates are every key), at most the tile's candidates.
    /// <see cref="BudgetRule.Rounded"/>: <c>For(candidates)</c>. <see cref="BudgetRule.Reference"/>, the official PyTorch
    /// code (microsoft/kascade, KascadeStrategy.attention_forward): <c>k = min(max(128, ⌊p·n/100⌋), n) − 32</c> with n
    /// the call's keys, in prefill and decode; in prefill each tile keeps <c>min(k, max(128, ⌊p·s/100⌋))</c>, s the tile's first
    /// position (the rolling count, unrounded). That code prefills the whole prompt in one call, so it is reproduced
    /// when the prompt is one chunk; with several chunks n is each chunk's end. Below 33 keys, where the reference has
    /// no k, every candidate is kept.
    /// </summary>
    public static int ForTile(QueryTile tile, int visibleKeys, double percent, BudgetRule rule)
    {
        if (rule == BudgetRule.Rounded)
        {
            return For(tile.CandidateEnd, percent);
        }
        long k = Math.Min(Math.Max(128L, (long)Math.Floor(percent / 100.0 * visibleKeys)), visibleKeys) - TileSize;
        if (k < 1)
        {
            // n ≤ 32: the reference cannot run (torch.topk of a negative k); every candidate is kept, as dense.
            return tile.CandidateEnd;
        }
        bool decode = tile.Queries == 1 && tile.CandidateEnd == visibleKeys;
        long count = decode ? k : Math.Min(k, Math.Max(128L, (long)Math.Floor(percent / 100.0 * tile.CandidateEnd)));
        return (int)Math.Clamp(count, 0, tile.CandidateEnd);
    }
}

/// <summary>How Kascade's anchors size their Top-k (<c>--budget-rule</c>).</summary>
public enum BudgetRule
{
    /// <summary>Ours (DESIGN §3): <c>k(n) = min(n, roundUp128(max(128, ⌊p·n/100⌋)))</c> of each tile's candidates, as the paper's kernels round.</summary>
    Rounded,

    /// <summary>The official PyTorch reference that produced the paper's accuracy numbers (<see cref="TopKBudget.ForTile"/>).</summary>
    Reference,
}

/// <summary>How an anchor pools the scores it ranks keys by.</summary>
public enum ScorePooling
{
    /// <summary>Exact post-softmax probabilities (full-row log-sum-exp), summed over the tile and the GQA group (the paper).</summary>
    PostSoftmax,

    /// <summary>Raw scaled <c>q·k</c> scores summed the same way, then Top-k (an ablation).</summary>
    PreSoftmax,
}

/// <summary>The query an anchor's selection scores are computed from (<c>--score-precision</c>).</summary>
public enum ScorePrecision
{
    /// <summary>
    /// The fp32 query: scores to fp32 accuracy, so every backend's plans match up to ties (the tensor-core kernels run
    /// the query as two bf16 halves, two MMAs per score).
    /// </summary>
    Exact,

    /// <summary>
    /// The bf16 rounding of each query element, scaled after the dot product: the numerics of the official reference's
    /// bf16 model and the paper's kernels, one MMA per score (docs/attention-plans.md: the prefill anchor's floor drops
    /// from about 2.1× dense to about 1.1×). Only the ranking changes; the anchor still attends with the fp32 query.
    /// </summary>
    Bf16,
}

/// <summary>What one layer does in a Kascade schedule.</summary>
public abstract record LayerRole
{
    private LayerRole()
    {
    }

    /// <summary>Dense attention, no selection.</summary>
    public sealed record Dense : LayerRole;

    /// <summary>Computes exact Top-k indices and attends over them (layer 0 attends densely but still selects).</summary>
    public sealed record Anchor : LayerRole;

    /// <summary>Attends over the indices of <paramref name="AnchorLayer"/>; KV head g reads the anchor's row <c>HeadMap[g]</c>.</summary>
    public sealed record Reuse(int AnchorLayer, IReadOnlyList<int> HeadMap) : LayerRole;
}

/// <summary>The selection an anchor makes.</summary>
/// <param name="TopKPercent">p of the budget rule.</param>
/// <param name="Pooling">Post- or pre-softmax pooling.</param>
/// <param name="PoolAllHeads">One index row pooled over every query head (kascade-pooled) instead of one per KV head.</param>
/// <param name="DenseOutput">Attend densely while still selecting (layer 0).</param>
/// <param name="Rule">How the Top-k is sized (<see cref="TopKBudget.ForTile"/>).</param>
/// <param name="Precision">The query the scores are computed from.</param>
public readonly record struct SelectionArgs(double TopKPercent, ScorePooling Pooling, bool PoolAllHeads, bool DenseOutput, BudgetRule Rule = BudgetRule.Rounded,
    ScorePrecision Precision = ScorePrecision.Exact);

/// <summary>The attention methods a model can run with.</summary>
public enum AttentionMethod
{
    Dense,

    /// <summary>Anchors + head-mapped reuse, as the paper.</summary>
    Kascade,

    /// <summary>One index row per tile pooled over all query heads, shared by every KV head (no head map).</summary>
    KascadePooled,

    /// <summary>Kascade with identity head maps.</summary>
    KascadeNoRemap,

    /// <summary>Every layer, every query head, every query: its own exact Top-k (an upper bound for selection methods).</summary>
    OracleTopK,

    /// <summary>Sink tokens + a recent window, every layer, prefill and decode (DESIGN §4).</summary>
    StreamingLlm,

    /// <summary>Decode: per query head, the key pages with the best min/max score bound.</summary>
    Quest,

    /// <summary>Decode: filter layers pick one Top-k set (post-softmax, max over heads) the following layers share.</summary>
    OmniKv,

    /// <summary>Decode: selection layers pick one set (union of per-head Top-k, sinks, recent) shared until the next.</summary>
    LessIsMore,

    /// <summary>Decode: per head, partial scores on the query's largest dimensions pick the Top-k (SparQ's cascade).</summary>
    SparCas,
}

/// <summary>How a session attends, layer by layer. Immutable.</summary>
public sealed record AttentionPolicy(AttentionMethod Method, KascadeSchedule? Schedule = null, double TopKPercent = 10, ScorePooling Pooling = ScorePooling.PostSoftmax)
{
    /// <summary>Parameters of the baseline methods (ignored by the others).</summary>
    public BaselineOptions Baselines { get; init; } = BaselineOptions.Default;

    /// <summary>How the Kascade variants size their anchors' Top-k (the oracle and the baselines use <see cref="TopKBudget.For"/>).</summary>
    public BudgetRule BudgetRule { get; init; } = BudgetRule.Rounded;

    /// <summary>The query the Kascade variants' anchors score keys with (the oracle and the baselines score exactly).</summary>
    public ScorePrecision ScorePrecision { get; init; } = ScorePrecision.Exact;

    /// <summary>
    /// Kascade decode (issue 16 §4): an anchor selects on every R-th decode step after a prefill and, in between, keeps its
    /// selection and adds each step's own key to it, so its layers attend over the selection plus every key appended
    /// since. 1 (the paper): every step selects.
    /// </summary>
    public int AnchorRefresh { get; init; } = 1;

    /// <summary>The method's entry in the registry (name, settings, how it selects).</summary>
    public AttentionMethodInfo Info => AttentionMethods.Of(Method);

    /// <summary>A baseline of DESIGN §4 (reads <see cref="Baselines"/>).</summary>
    public bool IsBaseline => Info.Baseline;

    public static AttentionPolicy Dense { get; } = new(AttentionMethod.Dense);

    public bool NeedsSchedule => Info.NeedsSchedule;

    /// <summary>The role of <paramref name="layer"/> under this policy (dense for dense and oracle policies, which do not use roles).</summary>
    public LayerRole RoleOf(int layer)
    {
        if (!NeedsSchedule)
        {
            return new LayerRole.Dense();
        }
        var role = Schedule!.RoleOf(layer);
        return Method switch
        {
            AttentionMethod.KascadePooled when role is LayerRole.Reuse r => r with { HeadMap = new int[r.HeadMap.Count] },
            AttentionMethod.KascadeNoRemap when role is LayerRole.Reuse r => r with { HeadMap = Enumerable.Range(0, r.HeadMap.Count).ToArray() },
            _ => role,
        };
    }
}
