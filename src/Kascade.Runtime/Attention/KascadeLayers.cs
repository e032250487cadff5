using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// Kascade and its variants (DESIGN §3): anchor layers write the session's plan (layer 0 attends densely and is always
/// the first anchor), reuse layers attend over their anchor's plan through a head map, the rest attend densely. With an
/// anchor refresh R above 1 (<see cref="AttentionPolicy.AnchorRefresh"/>), each anchor keeps its own decode plan: it
/// selects on every R-th decode step after a prefill and, on the steps between, adds the step's key to its plan
/// (<see cref="IBackend.ExtendPlan"/>) instead of selecting; its reuse layers read that plan either way.
/// </summary>
internal sealed class KascadeLayers : LayerAttention
{
    private readonly AttentionPolicy _policy;

    /// <summary>The attend ops: the backend's over one sequence, or its batched decode ops over a batch.</summary>
    private readonly AttentionOps _ops;

    /// <summary>The latest anchor's key selection, in the backend's memory: one plan for the largest chunk, holding the budget at full capacity.</summary>
    private readonly KeyPlan _plan;

    /// <summary>The layer that last wrote <see cref="_plan"/> in this chunk: host bookkeeping, so a reuse layer's check never waits for the device.</summary>
    private int _planLayer = -1;

    /// <summary>With a refresh above 1: each anchor's decode plan (its budget at full capacity plus room for R − 1 added keys).</summary>
    private readonly Dictionary<int, KeyPlan> _decodePlans = [];

    /// <summary>One-token steps since the kept plans were last selected afresh, and whether the current step selects.</summary>
    private int _decodeSteps;
    private bool _refresh = true;

    /// <summary>The position right after the last step: the only one a one-token step may extend the kept plans at.</summary>
    private int _nextPosition = -1;

    public KascadeLayers(IBackend backend, AttentionOps ops, AttentionPolicy policy, ModelConfig config, int capacity, int maxChunk)
        : base(backend)
    {
        _policy = policy;
        _ops = ops;
        // TopKBudget.For grows with the keys and bounds the reference rule's count.
        int selectors = policy.Method == AttentionMethod.KascadePooled ? 1 : config.KvHeads;
        _plan = backend.AllocatePlan(ops.PlanUnits(maxChunk), selectors, TopKBudget.For(capacity, policy.TopKPercent));
        if (policy.AnchorRefresh > 1)
        {
            foreach (int anchor in Enumerable.Range(0, config.Layers).Where(l => policy.RoleOf(l) is LayerRole.Anchor))
            {
                // A decode step's unit per sequence.
                _decodePlans[anchor] = backend.AllocatePlan(ops.Sequences, selectors, TopKBudget.For(capacity, policy.TopKPercent) + policy.AnchorRefresh - 1);
            }
        }
    }

    /// <summary>
    /// Variant 0: a step whose anchors select (a prefill chunk, every R-th one-token step); 1: a one-token step that
    /// extends the kept plans. Only a step at the position right after the previous one extends them: a session that
    /// moved elsewhere (a prompt continued after a jump, a cache filled outside its steps) selects first.
    /// </summary>
    public override int BeginStep(int tokens, int startPosition)
    {
        bool continues = startPosition == _nextPosition;
        _nextPosition = startPosition + tokens;
        if (tokens > 1 || _decodePlans.Count == 0)
        {
            _decodeSteps = 0;
            _refresh = true;
            return 0;
        }
        if (!continues)
        {
            _decodeSteps = 0;
        }
        _refresh = _decodeSteps++ % _policy.AnchorRefresh == 0;
        return _refresh ? 0 : 1;
    }

    public override void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        if (args.Layer == 0)
        {
            _planLayer = -1; // a plan serves the chunk its anchor wrote it for
        }
        bool decode = args.Tokens == 1 && _decodePlans.Count > 0;
        switch (_policy.RoleOf(args.Layer))
        {
            case LayerRole.Anchor when decode && !_refresh:
                var kept = _decodePlans[args.Layer];
                Backend.ExtendPlan(args, kept);
                if (args.Layer == 0)
                {
                    _ops.Dense(args, q, cache, output);
                }
                else
                {
                    _ops.Sparse(args, kept, Enumerable.Range(0, args.KvHeads).Select(g => _policy.Method == AttentionMethod.KascadePooled ? 0 : g).ToArray(), q, cache, output);
                }
                _planLayer = args.Layer;
                return;
            case LayerRole.Anchor:
                var selection = new SelectionArgs(_policy.TopKPercent, _policy.Pooling, _policy.Method == AttentionMethod.KascadePooled, DenseOutput: args.Layer == 0, _policy.BudgetRule, _policy.ScorePrecision);
                _ops.Anchor(args, selection, q, cache, decode ? _decodePlans[args.Layer] : _plan, output);
                _planLayer = args.Layer;
                return;
            case LayerRole.Reuse reuse:
                if (_planLayer != reuse.AnchorLayer)
                {
                    throw new InvalidOperationException($"layer {args.Layer} reuses anchor {reuse.AnchorLayer}, but the plan is from layer {_planLayer}");
                }
                _ops.Sparse(args, decode ? _decodePlans[reuse.AnchorLayer] : _plan, reuse.HeadMap, q, cache, output);
                return;
            default:
                _ops.Dense(args, q, cache, output);
                return;
        }
    }

    public override void Dispose()
    {
        _plan.Dispose();
        foreach (var plan in _decodePlans.Values)
        {
            plan.Dispose();
        }
    }
}
