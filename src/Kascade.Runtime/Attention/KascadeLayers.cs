using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// Kascade and its variants (DESIGN §3): anchor layers write the session's plan (layer 0 attends densely and is always
/// the first anchor), reuse layers attend over their anchor's plan through a head map, the rest attend densely.
/// </summary>
internal sealed class KascadeLayers : LayerAttention
{
    private readonly AttentionPolicy _policy;

    /// <summary>The latest anchor's key selection, in the backend's memory: one plan for the largest chunk, holding the budget at full capacity.</summary>
    private readonly KeyPlan _plan;

    /// <summary>The layer that last wrote <see cref="_plan"/> in this chunk: host bookkeeping, so a reuse layer's check never waits for the device.</summary>
    private int _planLayer = -1;

    public KascadeLayers(IBackend backend, AttentionPolicy policy, ModelConfig config, int capacity, int maxChunk)
        : base(backend)
    {
        _policy = policy;
        // TopKBudget.For grows with the keys and bounds the reference rule's count.
        _plan = backend.AllocatePlan(KeyPlan.UnitsFor(maxChunk), policy.Method == AttentionMethod.KascadePooled ? 1 : config.KvHeads, TopKBudget.For(capacity, policy.TopKPercent));
    }

    public override void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        if (args.Layer == 0)
        {
            _planLayer = -1; // a plan serves the chunk its anchor wrote it for
        }
        switch (_policy.RoleOf(args.Layer))
        {
            case LayerRole.Anchor:
                var selection = new SelectionArgs(_policy.TopKPercent, _policy.Pooling, _policy.Method == AttentionMethod.KascadePooled, DenseOutput: args.Layer == 0, _policy.BudgetRule);
                Backend.AnchorAttention(args, selection, q, cache, _plan, output);
                _planLayer = args.Layer;
                return;
            case LayerRole.Reuse reuse:
                if (_planLayer != reuse.AnchorLayer)
                {
                    throw new InvalidOperationException($"layer {args.Layer} reuses anchor {reuse.AnchorLayer}, but the plan is from layer {_planLayer}");
                }
                Backend.SparseAttention(args, _plan, reuse.HeadMap, q, cache, output);
                return;
            default:
                Backend.Attention(args, q, cache, output);
                return;
        }
    }

    public override void Dispose() => _plan.Dispose();
}
