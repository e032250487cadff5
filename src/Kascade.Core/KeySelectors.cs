namespace Kascade.Core;

/// <summary>
/// How a baseline of DESIGN §4 picks the keys a query attends to, as a backend op (<see cref="IBackend.SelectKeys"/>)
/// that writes a <see cref="KeyPlan"/>: every choice is computed on the device from the step's position, so a decode
/// step of any baseline records as a CUDA graph. Budgets use <see cref="TopKBudget.For"/> of the visible keys, the rule
/// Kascade uses, so that methods compare at equal key counts. Immutable.
/// </summary>
public abstract record KeySelector
{
    private KeySelector()
    {
    }

    /// <summary>Whether the selector runs in prefill too (a plan unit per query token) or in decode steps only.</summary>
    public virtual bool Prefills => false;

    /// <summary>Plan rows per unit: 1 (a set every head shares) or one per query head.</summary>
    public abstract int Selectors(int heads);

    /// <summary>Most positions one plan row holds when at most <paramref name="keys"/> keys are visible.</summary>
    public abstract int Capacity(int keys, int heads);

    /// <summary>
    /// The plan a session allocates for this selector: decode, or its largest chunk when it prefills; a unit per sequence
    /// for a batch's decode steps (<paramref name="sequences"/> above 1, <see cref="IBatchedDecode"/>).
    /// </summary>
    public KeyPlan AllocatePlan(IBackend backend, int heads, int capacity, int maxChunk, int sequences = 1) =>
        backend.AllocatePlan(sequences > 1 ? sequences : Prefills ? maxChunk : 1, Selectors(heads), Capacity(capacity, heads), Prefills ? PlanUnit.Token : PlanUnit.Tile);

    /// <summary>Refuses a chunk this selector does not run on, or a plan that cannot hold what it writes for the chunk.</summary>
    public void CheckPlan(AttentionArgs args, KeyPlan plan)
    {
        if (args.Tokens > 1 && !Prefills)
        {
            throw new ArgumentException($"{GetType().Name} selects keys for decode steps only, not a chunk of {args.Tokens} tokens");
        }
        int units = Prefills ? args.Tokens : 1, capacity = Capacity(args.StartPosition + args.Tokens, args.Heads);
        if (plan.Selectors != Selectors(args.Heads) || plan.Units < units || plan.Capacity < capacity || (Prefills && plan.Unit != PlanUnit.Token))
        {
            throw new ArgumentException($"a {plan.Unit} plan of {plan.Units} units × {plan.Selectors} selectors × {plan.Capacity} positions cannot hold {GetType().Name}'s {units} × {Selectors(args.Heads)} × {capacity}");
        }
    }

    /// <summary>
    /// streamingllm: the first <paramref name="Sinks"/> keys and the most recent ones, <c>max(MinWindow, ⌊p% · visible⌋)</c>
    /// keys in all, for every query of prefill and decode (a plan unit per query token, one selector).
    /// </summary>
    public sealed record Window(int Sinks, double Percent, int MinWindow) : KeySelector
    {
        public override bool Prefills => true;

        public override int Selectors(int heads) => 1;

        public override int Capacity(int keys, int heads) => Size(keys);

        /// <summary>The window's keys for a query that sees <paramref name="visible"/> keys.</summary>
        public int Size(int visible) => Math.Min(visible, Math.Max(MinWindow, (int)Math.Floor(Percent / 100.0 * visible)));
    }

    /// <summary>omnikv: every query head's post-softmax probabilities, max-pooled over the heads, then Top-k; one set.</summary>
    public sealed record MaxPooledTopK(double Percent) : KeySelector
    {
        public override int Selectors(int heads) => 1;

        public override int Capacity(int keys, int heads) => TopKBudget.For(keys, Percent);
    }

    /// <summary>
    /// lessismore: the union over query heads of each head's Top-k of pre-softmax scores (the budget less its recent
    /// share each), the sink keys and the most recent <c>⌊RecentFraction · budget⌋</c> keys; one set. A budget that covers
    /// every key keeps every key.
    /// </summary>
    public sealed record UnionTopK(double Percent, int Sinks, double RecentFraction) : KeySelector
    {
        public override int Selectors(int heads) => 1;

        public override int Capacity(int keys, int heads)
        {
            int budget = TopKBudget.For(keys, Percent), recent = Recent(budget);
            return (int)Math.Min(keys, (long)heads * (budget - recent) + Sinks + recent);
        }

        /// <summary>Recent keys kept at <paramref name="budget"/>.</summary>
        public int Recent(int budget) => (int)(RecentFraction * budget);
    }

    /// <summary>
    /// quest: per query head, the pages of <paramref name="PageSize"/> keys whose min/max bound
    /// <c>Σ_d max(q_d·min_d, q_d·max_d)</c> is largest, <c>⌈budget / PageSize⌉</c> of them, expanded to their keys. The
    /// bounds are kept per layer in a <see cref="SelectorState"/> (<see cref="IBackend.UpdateSelectorState"/>).
    /// </summary>
    public sealed record PageTopK(double Percent, int PageSize) : KeySelector
    {
        public override int Selectors(int heads) => heads;

        public override int Capacity(int keys, int heads) => (int)Math.Min((long)Pages(TopKBudget.For(keys, Percent)) * PageSize, (long)Pages(keys) * PageSize);

        /// <summary>Pages that hold <paramref name="keys"/> keys.</summary>
        public int Pages(int keys) => (keys + PageSize - 1) / PageSize;
    }

    /// <summary>
    /// sparcas: per query head, scores on the <c>round(DimensionFraction · HeadDim)</c> dimensions of largest |q| (chosen
    /// again every <paramref name="RefreshSteps"/> steps of a layer, kept in a <see cref="SelectorState"/>), then Top-k.
    /// </summary>
    public sealed record PartialScoreTopK(double Percent, double DimensionFraction, int RefreshSteps) : KeySelector
    {
        public override int Selectors(int heads) => heads;

        public override int Capacity(int keys, int heads) => TopKBudget.For(keys, Percent);

        /// <summary>Dimensions scored per head.</summary>
        public int Dimensions(int headDim) => Math.Max(1, (int)Math.Round(DimensionFraction * headDim));
    }
}

/// <summary>
/// What a <see cref="KeySelector"/> keeps between calls, per layer, in the backend's memory: quest's page bounds and
/// sparcas's dimension sets with their age. Allocated once for a session by <see cref="IBackend.AllocateSelectorState"/>.
/// </summary>
public abstract class SelectorState : IDisposable
{
    protected SelectorState(KeySelector selector, KvCacheShape shape, int heads)
    {
        Selector = selector;
        Shape = shape;
        Heads = heads;
    }

    public KeySelector Selector { get; }

    public KvCacheShape Shape { get; }

    public int Heads { get; }

    public abstract void Dispose();
}
