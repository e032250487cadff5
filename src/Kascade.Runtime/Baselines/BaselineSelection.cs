using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Runtime.Baselines;

/// <summary>What a baseline does in one layer of a decode step.</summary>
public enum BaselineLayerMode
{
    /// <summary>Dense attention.</summary>
    Dense,

    /// <summary>Dense attention that also picks the key set the following layers share (omnikv, lessismore).</summary>
    DenseAndSelect,

    /// <summary>Attention over a selected key set.</summary>
    Selected,
}

/// <summary>
/// The key selections of the baselines of DESIGN §4 as pure functions of host data. Keys are one KV head's rows
/// <c>[n, HeadDim]</c> fp32; queries one head's <c>[HeadDim]</c>, already scaled or not as each function says.
/// Every returned set is ascending and holds distinct positions below n.
/// </summary>
public static class BaselineSelection
{
    /// <summary>The role of <paramref name="layer"/> for a decode step under <paramref name="method"/>.</summary>
    public static BaselineLayerMode ModeOf(AttentionMethod method, BaselineOptions o, int layer) => method switch
    {
        AttentionMethod.StreamingLlm => BaselineLayerMode.Selected,
        AttentionMethod.Quest => layer < o.QuestDenseLayers ? BaselineLayerMode.Dense : BaselineLayerMode.Selected,
        AttentionMethod.SparCas => layer < o.SparCasDenseLayers ? BaselineLayerMode.Dense : BaselineLayerMode.Selected,
        // Dense in layers 0 and 1 (before the first filter) and in the layer after each filter layer.
        AttentionMethod.OmniKv => o.OmniKvFilterLayers.Contains(layer) ? BaselineLayerMode.DenseAndSelect
            : layer < o.OmniKvFilterLayers.Min() || o.OmniKvFilterLayers.Contains(layer - 1) ? BaselineLayerMode.Dense
            : BaselineLayerMode.Selected,
        AttentionMethod.LessIsMore => o.LessIsMoreSelectionLayers.Contains(layer) ? BaselineLayerMode.DenseAndSelect
            : layer < o.LessIsMoreSelectionLayers.Min() ? BaselineLayerMode.Dense
            : BaselineLayerMode.Selected,
        _ => throw new ArgumentOutOfRangeException(nameof(method), $"{method} is not a baseline"),
    };

    /// <summary>streamingllm: the first sink tokens and the most recent ones, <c>max(MinWindow, p% · visible)</c> in all.</summary>
    public static int[] StreamingWindow(int visible, BaselineOptions o)
    {
        int window = Math.Min(visible, Math.Max(o.MinWindow, (int)Math.Floor(o.StreamingWindowPercent / 100.0 * visible)));
        int sinks = Math.Min(o.SinkTokens, window), recent = window - sinks;
        var set = new int[window];
        for (int i = 0; i < sinks; i++)
        {
            set[i] = i;
        }
        for (int i = 0; i < recent; i++)
        {
            set[sinks + i] = visible - recent + i;
        }
        return set;
    }

    /// <summary>quest: per-channel minimum and maximum of each page of <paramref name="pageSize"/> keys (the last page may be short).</summary>
    public static (float[] Min, float[] Max) PageBounds(ReadOnlySpan<float> keys, int n, int d, int pageSize)
    {
        int pages = (n + pageSize - 1) / pageSize;
        var min = new float[pages * d];
        var max = new float[pages * d];
        for (int p = 0; p < pages; p++)
        {
            var lo = min.AsSpan(p * d, d);
            var hi = max.AsSpan(p * d, d);
            keys.Slice(p * pageSize * d, d).CopyTo(lo);
            keys.Slice(p * pageSize * d, d).CopyTo(hi);
            for (int j = p * pageSize + 1; j < Math.Min(n, (p + 1) * pageSize); j++)
            {
                TensorPrimitives.Min(lo, keys.Slice(j * d, d), lo);
                TensorPrimitives.Max(hi, keys.Slice(j * d, d), hi);
            }
        }
        return (min, max);
    }

    /// <summary>
    /// quest: page score <c>Σ_d max(q_d·min_d, q_d·max_d)</c> (an upper bound of any q·k in the page); the best
    /// <c>ceil(budget / pageSize)</c> pages, expanded to their positions.
    /// </summary>
    public static int[] QuestPages(ReadOnlySpan<float> query, (float[] Min, float[] Max) bounds, int n, int pageSize, int budget)
    {
        int d = query.Length, pages = (n + pageSize - 1) / pageSize;
        var score = new float[pages];
        for (int p = 0; p < pages; p++)
        {
            float s = 0;
            for (int e = 0; e < d; e++)
            {
                s += Math.Max(query[e] * bounds.Min[p * d + e], query[e] * bounds.Max[p * d + e]);
            }
            score[p] = s;
        }
        var chosen = Ranking.TopK(score, Math.Min(pages, (budget + pageSize - 1) / pageSize));
        Array.Sort(chosen);
        var set = new List<int>(chosen.Length * pageSize);
        foreach (int p in chosen)
        {
            for (int j = p * pageSize; j < Math.Min(n, (p + 1) * pageSize); j++)
            {
                set.Add(j);
            }
        }
        return [.. set];
    }

    /// <summary>omnikv: post-softmax probabilities of every query head (rows of n), max-pooled over heads, then Top-k.</summary>
    public static int[] MaxPooledTopK(IReadOnlyList<float[]> probabilities, int n, int budget)
    {
        var pooled = new float[n];
        probabilities[0].AsSpan(0, n).CopyTo(pooled);
        for (int h = 1; h < probabilities.Count; h++)
        {
            TensorPrimitives.Max(pooled, probabilities[h].AsSpan(0, n), pooled);
        }
        return Sorted(Ranking.TopK(pooled, budget));
    }

    /// <summary>
    /// lessismore: the union over heads of each head's Top-k of pre-softmax scores (1 − recent fraction of the
    /// budget each), plus the sink tokens and the most recent <c>recent fraction · budget</c> tokens. A budget that
    /// covers every key keeps every key, as for the other Top-k methods.
    /// </summary>
    public static int[] LessIsMoreSet(IReadOnlyList<float[]> scores, int n, int budget, BaselineOptions o)
    {
        if (budget >= n)
        {
            return [.. Enumerable.Range(0, n)];
        }
        int recent = (int)(o.LessIsMoreRecentFraction * budget), perHead = budget - recent;
        var set = new HashSet<int>();
        foreach (var row in scores)
        {
            set.UnionWith(Ranking.TopK(row.AsSpan(0, n), perHead));
        }
        for (int j = 0; j < Math.Min(o.SinkTokens, n); j++)
        {
            set.Add(j);
        }
        for (int j = Math.Max(0, n - recent); j < n; j++)
        {
            set.Add(j);
        }
        return Sorted([.. set]);
    }

    /// <summary>sparcas: the <paramref name="count"/> dimensions of largest |q_d|.</summary>
    public static int[] LargestDimensions(ReadOnlySpan<float> query, int count)
    {
        var magnitude = new float[query.Length];
        TensorPrimitives.Abs(query, magnitude);
        return Sorted(Ranking.TopK(magnitude, count));
    }

    /// <summary>sparcas: partial scores <c>q[dims] · K[j, dims]</c> over all n keys, then the Top-k tokens.</summary>
    public static int[] PartialScoreTopK(ReadOnlySpan<float> query, int[] dims, ReadOnlySpan<float> keys, int n, int budget)
    {
        int d = query.Length;
        var partial = new float[n];
        for (int j = 0; j < n; j++)
        {
            float s = 0;
            foreach (int e in dims)
            {
                s += query[e] * keys[j * d + e];
            }
            partial[j] = s;
        }
        return Sorted(Ranking.TopK(partial, budget));
    }

    private static int[] Sorted(int[] positions)
    {
        Array.Sort(positions);
        return positions;
    }
}
