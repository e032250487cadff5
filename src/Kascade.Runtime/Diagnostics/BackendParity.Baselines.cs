using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// The baselines' key selectors (DESIGN §4, <see cref="KeySelector"/>) against the reference: each selector's plan
/// (sets equal up to the ties of the score it ranks by, recomputed here on the host) and the sparse attention over it
/// through its head map, for decode steps from 1 to 20,001 keys and, for streamingllm's windows, prefill chunks that
/// start anywhere. Quest's page bounds are built by a prefill update and a decode update, as a session builds them;
/// sparcas selects twice so that the second selection reads the dimensions the first chose.
/// </summary>
public static partial class BackendParity
{
    private static readonly (int Start, int Tokens)[] BaselineDecodeSteps = [(0, 1), (299, 1), (1000, 1), (4095, 1), (20000, 1)];

    private static readonly (int Start, int Tokens)[] WindowChunks = [(0, 40), (45, 20), (300, 5), (0, 300)];

    private static void BaselineCases(IBackend reference, IBackend candidate, Random rng, Action<ParityResult> record)
    {
        KeySelector[] decodeSelectors =
        [
            new KeySelector.MaxPooledTopK(10), new KeySelector.UnionTopK(10, 4, 0.25), new KeySelector.UnionTopK(20, 0, 0.5),
            new KeySelector.PageTopK(10, 16), new KeySelector.PageTopK(20, 7), new KeySelector.PartialScoreTopK(10, 0.25, 2),
            new KeySelector.Window(4, 30, 128),
        ];
        foreach (int headDim in new[] { 64, 128 })
        {
            foreach (int group in new[] { 1, 2, 4, 8 })
            {
                foreach (var (start, tokens) in BaselineDecodeSteps)
                {
                    var inputs = AttentionInputs(rng, headDim, group, start, tokens);
                    var earlier = Random(rng, tokens * inputs.Heads * headDim, 2);
                    foreach (var selector in decodeSelectors)
                    {
                        foreach (var r in SelectorCases(reference, candidate, inputs, earlier, headDim, start, tokens, selector))
                        {
                            record(r);
                        }
                    }
                }
                foreach (var (start, tokens) in WindowChunks)
                {
                    var inputs = AttentionInputs(rng, headDim, group, start, tokens);
                    foreach (var r in SelectorCases(reference, candidate, inputs, null, headDim, start, tokens, new KeySelector.Window(4, 30, 16)))
                    {
                        record(r);
                    }
                }
            }
        }
    }

    private static IEnumerable<ParityResult> SelectorCases(IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs,
        float[]? earlier, int headDim, int start, int tokens, KeySelector selector)
    {
        int heads = inputs.Heads, selectors = selector.Selectors(heads);
        int[] headMap = selectors == 1 ? new int[inputs.KvHeads] : [.. Enumerable.Range(0, heads)];
        (int[] Counts, int[] Indices, float[] Output, int Capacity) Run(IBackend b, (int[] Counts, int[] Indices)? given = null)
        {
            var (cache, q) = Load(b, headDim, inputs, tokens);
            var args = Args(headDim, start, tokens, inputs);
            using var state = b.AllocateSelectorState(selector, new KvCacheShape(1, inputs.KvHeads, headDim, inputs.Total), heads);
            using var plan = selector.AllocatePlan(b, heads, inputs.Total, tokens);
            using var output = b.Allocate(tokens, heads * headDim);
            if (start > 0)
            {
                b.UpdateSelectorState(args with { StartPosition = 0, Tokens = start }, cache, state);
            }
            b.UpdateSelectorState(args, cache, state);
            if (selector is KeySelector.PartialScoreTopK)
            {
                using var first = b.Upload(earlier!, tokens, heads * headDim);
                b.SelectKeys(args, first, cache, state, plan);
            }
            b.SelectKeys(args, q, cache, state, plan);
            if (given is { } g)
            {
                b.WritePlan(args, plan, g.Counts, g.Indices);
            }
            b.SparseAttention(args, plan, headMap, q, cache, output);
            return ReadPlanAndOutput(b, plan, (selector.Prefills ? tokens : 1) * selectors, output);
        }
        var actual = Run(candidate);
        var expected = Run(reference);
        string shape = $"{selector} d {headDim} group {heads / inputs.KvHeads} keys {start + tokens} queries {tokens}";
        var ties = SelectorTies(selector, inputs, earlier, headDim, expected.Counts, expected.Indices, expected.Capacity);
        int mismatches = PlanMismatches(expected.Counts, expected.Indices, actual.Counts, actual.Indices, expected.Capacity, ties);
        var over = OutputsToCompare(expected, mismatches, SamePlan(expected.Counts, expected.Indices, actual.Counts, actual.Indices, expected.Capacity),
            () => Run(reference, (actual.Counts, actual.Indices)));
        yield return new ParityResult("baseline plan", shape, mismatches, 0);
        yield return CompareValues("baseline sparse attention", shape, over.Output, actual.Output, Absolute);
    }

    /// <summary>The first <paramref name="rows"/> rows of a plan (int32 counts and <c>[rows, Capacity]</c> indices) and an output's values, read back.</summary>
    private static (int[] Counts, int[] Indices, float[] Output, int Capacity) ReadPlanAndOutput(IBackend b, KeyPlan plan, int rows, DeviceTensor output)
    {
        var (counts, indices) = ReadPlan(b, plan, rows);
        return (counts, indices, Values(b, output), plan.Capacity);
    }

    /// <summary>
    /// The ties of a decode selector's ranking, its scores recomputed on the host from the inputs (rows as the plan's: one,
    /// or one per query head); a window has none.
    /// </summary>
    private static Func<int, int, bool> SelectorTies(KeySelector selector, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs, float[]? earlier,
        int headDim, int[] counts, int[] indices, int capacity)
    {
        int n = inputs.Total, heads = inputs.Heads, group = heads / inputs.KvHeads;
        float scale = 1 / MathF.Sqrt(headDim);
        // The decode query's (or the earlier query's) head h against key j over `dims` (every dimension when null).
        float Dot(float[] q, int h, int j, int[]? dims)
        {
            var query = q.AsSpan(h * headDim, headDim);
            var key = inputs.K.AsSpan((j * inputs.KvHeads + h / group) * headDim, headDim);
            if (dims is null)
            {
                return TensorPrimitives.Dot(query, key);
            }
            float sum = 0;
            foreach (int e in dims)
            {
                sum += query[e] * key[e];
            }
            return sum;
        }
        float[] HeadRow(int h, int[]? dims, float factor)
        {
            var row = new float[n];
            for (int j = 0; j < n; j++)
            {
                row[j] = factor * Dot(inputs.Q, h, j, dims);
            }
            return row;
        }
        switch (selector)
        {
            case KeySelector.MaxPooledTopK:
            {
                var pooled = new float[n];
                for (int h = 0; h < heads; h++)
                {
                    var row = HeadRow(h, null, scale);
                    TensorPrimitives.SoftMax(row, row);
                    TensorPrimitives.Max(pooled, row, pooled);
                }
                return ScoreTies(counts, indices, capacity, pooled, n);
            }
            case KeySelector.UnionTopK union:
            {
                int budget = TopKBudget.For(n, union.Percent), perHead = budget - union.Recent(budget);
                var rows = Enumerable.Range(0, heads).Select(h => HeadRow(h, null, scale)).ToArray();
                var kth = rows.Select(r => Ranking.KthLargest(r, perHead)).ToArray();
                return (_, j) => Enumerable.Range(0, heads).Any(h => Near(rows[h][j], kth[h]));
            }
            case KeySelector.PageTopK quest:
            {
                // Each position scores its page's bound Σ_e max(q_e · min_e, q_e · max_e).
                var scores = new float[heads * n];
                for (int h = 0; h < heads; h++)
                {
                    for (int first = 0; first < n; first += quest.PageSize)
                    {
                        int last = Math.Min(n, first + quest.PageSize);
                        float bound = 0;
                        for (int e = 0; e < headDim; e++)
                        {
                            float lo = float.PositiveInfinity, hi = float.NegativeInfinity, qe = inputs.Q[h * headDim + e];
                            for (int i = first; i < last; i++)
                            {
                                float k = inputs.K[(i * inputs.KvHeads + h / group) * headDim + e];
                                lo = Math.Min(lo, k);
                                hi = Math.Max(hi, k);
                            }
                            bound += Math.Max(qe * lo, qe * hi);
                        }
                        scores.AsSpan(h * n + first, last - first).Fill(bound);
                    }
                }
                return ScoreTies(counts, indices, capacity, scores, n);
            }
            case KeySelector.PartialScoreTopK sparcas:
            {
                var scores = new float[heads * n];
                for (int h = 0; h < heads; h++)
                {
                    var magnitude = new float[headDim];
                    TensorPrimitives.Abs(earlier.AsSpan(h * headDim, headDim), magnitude);
                    var dims = Ranking.TopK(magnitude, sparcas.Dimensions(headDim));
                    Array.Sort(dims);
                    HeadRow(h, dims, 1).CopyTo(scores, h * n);
                }
                return ScoreTies(counts, indices, capacity, scores, n);
            }
            default:
                return (_, _) => false;
        }
    }
}
