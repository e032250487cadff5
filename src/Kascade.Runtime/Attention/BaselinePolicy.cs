using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>What a baseline does in one layer (DESIGN §4).</summary>
public enum BaselineLayerMode
{
    /// <summary>Dense attention.</summary>
    Dense,

    /// <summary>Dense attention that also picks the key set the following layers share (omnikv's filter layers, lessismore's selection layers).</summary>
    DenseAndSelect,

    /// <summary>Picks this layer's own keys and attends over them (streamingllm, quest, sparcas).</summary>
    Select,

    /// <summary>Attends over the set the last <see cref="DenseAndSelect"/> layer picked.</summary>
    Reuse,
}

/// <summary>How a baseline policy of DESIGN §4 runs: its key selector and each layer's mode.</summary>
public static class BaselinePolicy
{
    /// <summary>The selector of a baseline policy, from its budget and <see cref="BaselineOptions"/>.</summary>
    public static KeySelector SelectorOf(AttentionPolicy policy)
    {
        var o = policy.Baselines;
        double p = policy.TopKPercent;
        return policy.Method switch
        {
            AttentionMethod.StreamingLlm => new KeySelector.Window(o.SinkTokens, o.StreamingWindowPercent, o.MinWindow),
            AttentionMethod.Quest => new KeySelector.PageTopK(p, o.QuestPageSize),
            AttentionMethod.OmniKv => new KeySelector.MaxPooledTopK(p),
            AttentionMethod.LessIsMore => new KeySelector.UnionTopK(p, o.SinkTokens, o.LessIsMoreRecentFraction),
            AttentionMethod.SparCas => new KeySelector.PartialScoreTopK(p, o.SparCasDimensionFraction, o.SparCasRefreshSteps),
            _ => throw new ArgumentOutOfRangeException(nameof(policy), policy.Method, "not a baseline"),
        };
    }

    /// <summary>The role of <paramref name="layer"/> under <paramref name="method"/>.</summary>
    public static BaselineLayerMode ModeOf(AttentionMethod method, BaselineOptions o, int layer) => method switch
    {
        AttentionMethod.StreamingLlm => BaselineLayerMode.Select,
        AttentionMethod.Quest => layer < o.QuestDenseLayers ? BaselineLayerMode.Dense : BaselineLayerMode.Select,
        AttentionMethod.SparCas => layer < o.SparCasDenseLayers ? BaselineLayerMode.Dense : BaselineLayerMode.Select,
        // Dense in layers 0 and 1 (before the first filter) and in the layer after each filter layer.
        AttentionMethod.OmniKv => o.OmniKvFilterLayers.Contains(layer) ? BaselineLayerMode.DenseAndSelect
            : layer < o.OmniKvFilterLayers.Min() || o.OmniKvFilterLayers.Contains(layer - 1) ? BaselineLayerMode.Dense
            : BaselineLayerMode.Reuse,
        AttentionMethod.LessIsMore => o.LessIsMoreSelectionLayers.Contains(layer) ? BaselineLayerMode.DenseAndSelect
            : layer < o.LessIsMoreSelectionLayers.Min() ? BaselineLayerMode.Dense
            : BaselineLayerMode.Reuse,
        _ => throw new ArgumentOutOfRangeException(nameof(method), $"{method} is not a baseline"),
    };
}
