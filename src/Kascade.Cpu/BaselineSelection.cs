using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>
/// The key selections of the baselines of DESIGN §4 as pure functions of host data: the reference the CPU backend's
/// <see cref="IBackend.SelectKeys"/> runs and the GPU's selectors are checked against. Keys are one KV head's rows
/// <c>[n, HeadDim]</c> fp32; queries one head's <c>[HeadDim]</c>, already scaled or not as each function says.
/// Every returned set is ascending and holds distinct positions below n.
/// </summary>
public static class BaselineSelection
{
    /// <summary>streamingllm: the first sink tokens and the most recent ones, <see cref="KeySelector.Window.Size"/> in all.</summary>
    public static int[] StreamingWindow(int visible, KeySelector.Window window)
    {
        int size = window.Size(visible);
        int sinks = Math.Min(window.Sinks, size), recent = size - sinks;
        var set = new int[size];
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
        WritePageBounds(keys, n, d, pageSize, 0, min, max);
        return (min, max);
    }

    /// <summary>
    /// quest: the bounds of pages <c>[firstPage, ⌈n / pageSize⌉)</c> of <paramref name="keys"/> (<c>[≥ n, d]</c>) into
    /// <paramref name="min"/> and <paramref name="max"/> (<c>[pages, d]</c>), the pages before left as they are.
    /// </summary>
    public static void WritePageBounds(ReadOnlySpan<float> keys, int n, int d, int pageSize, int firstPage, Span<float> min, Span<float> max)
    {
        for (int p = firstPage; p < (n + pageSize - 1) / pageSize; p++)
        {
            var lo = min.Slice(p * d, d);
            var hi = max.Slice(p * d, d);
            keys.Slice(p * pageSize * d, d).CopyTo(lo);
            keys.Slice(p * pageSize * d, d).CopyTo(hi);
            for (int j = p * pageSize + 1; j < Math.Min(n, (p + 1) * pageSize); j++)
            {
                TensorPrimitives.Min(lo, keys.Slice(j * d, d), lo);
                TensorPrimitives.Max(hi, keys.Slice(j * d, d), hi);
            }
        }
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
    /// lessismore: the union over heads of each head's Top-k of pre-softmax scores (the budget less its recent share
    /// each), plus the sink tokens and the most recent <see cref="KeySelector.UnionTopK.Recent"/> tokens. A budget that
    /// covers every key keeps every key, as for the other Top-k methods.
    /// </summary>
    public static int[] LessIsMoreSet(IReadOnlyList<float[]> scores, int n, int budget, KeySelector.UnionTopK union)
    {
        if (budget >= n)
        {
            return [.. Enumerable.Range(0, n)];
        }
        int recent = union.Recent(budget), perHead = budget - recent;
        var set = new HashSet<int>();
        foreach (var row in scores)
        {
            set.UnionWith(Ranking.TopK(row.AsSpan(0, n), perHead));
        }
        for (int j = 0; j < Math.Min(union.Sinks, n); j++)
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
