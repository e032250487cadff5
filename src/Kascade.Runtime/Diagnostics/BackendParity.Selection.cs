using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// The select/attend ops (DESIGN §3) against the reference: pooled tile scores, per-row probabilities, the anchors'
/// plans (index sets equal up to score ties), sparse attention over a plan through a head map, and the oracle, over
/// head dims 64 and 128, GQA groups 1–8, prefill chunks that start and end inside tiles, and decode steps. Scores are
/// fp32-exact on every path (the prefill anchor kernel splits its queries into two bf16 halves), so plans match up to
/// ties (with <see cref="ScorePrecision.Bf16"/>, the exact scores of the rounded queries); sparse attention over a
/// prefill chunk runs on tensor cores and is held to the dense kernels' bound.
/// </summary>
public static partial class BackendParity
{
    /// <summary>
    /// Chunks (start, tokens): one query, ragged tiles, several tiles from inside one, a chunk far into a 9k context that
    /// starts and ends inside tiles (the anchor kernels' unmasked key tiles before the diagonal), and decode at 1k and 20k keys.
    /// </summary>
    private static readonly (int Start, int Tokens)[] SelectionChunks = [(0, 1), (45, 20), (0, 300), (500, 300), (1000, 1), (3000, 3), (4000, 64), (9000, 77), (20000, 1)];

    private static void SelectionCases(IBackend reference, IBackend candidate, Random rng, Action<ParityResult> record)
    {
        foreach (int headDim in new[] { 64, 128 })
        {
            foreach (int group in new[] { 1, 2, 4, 8 })
            {
                foreach (var (start, tokens) in SelectionChunks)
                {
                    var inputs = AttentionInputs(rng, headDim, group, start, tokens);
                    string shape = $"d {headDim} group {group} keys {start + tokens} queries {tokens}";
                    record(ScoresCase("pooled tile scores", shape, reference, candidate, inputs, headDim, start, tokens, ScorePooling.PostSoftmax, inputs.KvHeads));
                    // The other variants on every other chunk, to keep the grid's time down.
                    bool variants = (start + tokens) % 2 == 1 || tokens == 300;
                    var kascade = new SelectionArgs(10, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false);
                    foreach (var r in AnchorCases(shape, reference, candidate, inputs, headDim, start, tokens, kascade))
                    {
                        record(r);
                    }
                    if (variants)
                    {
                        record(ScoresCase("pooled tile scores (pre-softmax, all heads)", shape, reference, candidate, inputs, headDim, start, tokens, ScorePooling.PreSoftmax, 1));
                        // A pool per KV head: the tensor-core anchor kernels' pre-softmax branch (--pooling pre).
                        record(ScoresCase("pooled tile scores (pre-softmax)", shape, reference, candidate, inputs, headDim, start, tokens, ScorePooling.PreSoftmax, inputs.KvHeads));
                        foreach (var r in AnchorCases(shape + ", all heads, reference budget", reference, candidate, inputs, headDim, start, tokens, kascade with { PoolAllHeads = true, Rule = BudgetRule.Reference, TopKPercent = 20 }))
                        {
                            record(r);
                        }
                        // Layer 0: dense output and a selection (on the GPU a decode step takes both from one pass).
                        foreach (var r in AnchorCases(shape + ", layer 0", reference, candidate, inputs, headDim, start, tokens, kascade with { DenseOutput = true }))
                        {
                            record(r);
                        }
                        foreach (var r in WrittenPlanCases(shape, reference, candidate, inputs, headDim, start, tokens))
                        {
                            record(r);
                        }
                        // Scores from the queries' bf16 rounding (one MMA per score on the GPU).
                        foreach (var r in AnchorCases(shape + ", bf16 scores", reference, candidate, inputs, headDim, start, tokens, kascade with { Precision = ScorePrecision.Bf16 }))
                        {
                            record(r);
                        }
                        // Layer 0 with bf16 scores: a decode step scores apart from its dense pass; a prefill chunk on Hopper
                        // takes its rows' log-sum-exp from a dense pass over the same rounded queries (attention_wgmma_lse_bf16).
                        foreach (var r in AnchorCases(shape + ", layer 0, bf16 scores", reference, candidate, inputs, headDim, start, tokens, kascade with { DenseOutput = true, Precision = ScorePrecision.Bf16 }))
                        {
                            record(r);
                        }
                        if (tokens == 1)
                        {
                            foreach (var r in AnchorCases(shape + ", layer 0, pre-softmax, all heads", reference, candidate, inputs, headDim, start, tokens, kascade with { DenseOutput = true, Pooling = ScorePooling.PreSoftmax, PoolAllHeads = true }))
                            {
                                record(r);
                            }
                        }
                    }
                    if (start + tokens <= 5000)
                    {
                        record(ProbabilitiesCase(shape, reference, candidate, inputs, headDim, start, tokens));
                    }
                    record(OracleCase(shape, reference, candidate, inputs, headDim, start, tokens, variants ? 20 : 10));
                }
            }
        }
    }

    private static AttentionArgs Args(int headDim, int start, int tokens, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs) =>
        new(0, tokens, start, inputs.Heads, inputs.KvHeads, headDim, 1f / MathF.Sqrt(headDim));

    /// <summary>A one-layer cache holding the inputs' keys and values, and their queries.</summary>
    private static (KvCache Cache, DeviceTensor Q) Load(IBackend b, int headDim, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs, int tokens)
    {
        var cache = b.AllocateKvCache(new KvCacheShape(1, inputs.KvHeads, headDim, inputs.Total));
        b.AppendKv(cache, 0, 0, b.Upload(inputs.K, inputs.Total, inputs.KvHeads * headDim), b.Upload(inputs.V, inputs.Total, inputs.KvHeads * headDim));
        return (cache, b.Upload(inputs.Q, tokens, inputs.Heads * headDim));
    }

    private static ParityResult ScoresCase(string op, string shape, IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs,
        int headDim, int start, int tokens, ScorePooling pooling, int pools) =>
        Compare(op, shape, reference, candidate, (b, _) => Scores(b, inputs, headDim, start, tokens, pooling, pools), []);

    private static DeviceTensor Scores(IBackend b, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs, int headDim, int start, int tokens, ScorePooling pooling, int pools)
    {
        var (cache, q) = Load(b, headDim, inputs, tokens);
        var scores = b.Allocate(QueryTile.Of(start, tokens).Length * pools, start + tokens);
        b.PooledTileScores(Args(headDim, start, tokens, inputs), pooling, pools, q, cache, scores);
        return scores;
    }

    private static ParityResult ProbabilitiesCase(string shape, IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs, int headDim, int start, int tokens) =>
        Compare("attention probabilities", shape, reference, candidate, (b, _) =>
        {
            var (cache, q) = Load(b, headDim, inputs, tokens);
            var p = b.Allocate(tokens * inputs.Heads, start + tokens);
            b.AttentionProbabilities(Args(headDim, start, tokens, inputs), q, cache, p);
            return p;
        }, []);

    private static ParityResult OracleCase(string shape, IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs, int headDim, int start, int tokens, double percent) =>
        Compare("oracle-topk attention", $"{shape}, top {percent}%", reference, candidate, (b, _) =>
        {
            var (cache, q) = Load(b, headDim, inputs, tokens);
            var o = b.Allocate(tokens, inputs.Heads * headDim);
            b.OracleTopKAttention(Args(headDim, start, tokens, inputs), percent, q, cache, o);
            return o;
        }, []);

    /// <summary>
    /// An anchor's plan (sets compared up to ties, judged on the reference's scores), its sparse output, and a reuse
    /// layer reading the plan through a head map that swaps the selectors. Where the plans differ by ties, the
    /// reference attends over the candidate's plan, so that the outputs compare attention over the same keys.
    /// </summary>
    private static IEnumerable<ParityResult> AnchorCases(string shape, IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs,
        int headDim, int start, int tokens, SelectionArgs selection)
    {
        int selectors = selection.PoolAllHeads ? 1 : inputs.KvHeads;
        var map = Enumerable.Range(0, inputs.KvHeads).Select(g => selection.PoolAllHeads ? 0 : inputs.KvHeads - 1 - g).ToArray();
        var anchorMap = Enumerable.Range(0, inputs.KvHeads).Select(g => selection.PoolAllHeads ? 0 : g).ToArray();
        (int[] Counts, int[] Indices, float[] Anchor, float[] Reuse, int Capacity) Run(IBackend b, (int[] Counts, int[] Indices)? given = null)
        {
            var (cache, q) = Load(b, headDim, inputs, tokens);
            var args = Args(headDim, start, tokens, inputs);
            using var plan = b.AllocatePlan(KeyPlan.UnitsFor(tokens), selectors, TopKBudget.For(inputs.Total, selection.TopKPercent));
            using var anchor = b.Allocate(tokens, inputs.Heads * headDim);
            using var reuse = b.Allocate(tokens, inputs.Heads * headDim);
            b.AnchorAttention(args, selection, q, cache, plan, anchor);
            if (given is { } g)
            {
                b.WritePlan(args, plan, g.Counts, g.Indices);
                if (!selection.DenseOutput)
                {
                    b.SparseAttention(args, plan, anchorMap, q, cache, anchor);
                }
            }
            b.SparseAttention(args, plan, map, q, cache, reuse);
            var (counts, indices) = ReadPlan(b, plan, QueryTile.Of(start, tokens).Length * selectors);
            return (counts, indices, Values(b, anchor), Values(b, reuse), plan.Capacity);
        }
        var actual = Run(candidate);
        var expected = Run(reference);
        // Ties are judged on the scores of the query the anchor ranks by.
        var scored = selection.Precision == ScorePrecision.Bf16 ? inputs with { Q = Bf16(inputs.Q) } : inputs;
        using var scoreTensor = Scores(reference, scored, headDim, start, tokens, selection.Pooling, selectors);
        var scores = new float[scoreTensor.Rows * scoreTensor.Cols];
        reference.Read(scoreTensor, scores);
        var ties = ScoreTies(expected.Counts, expected.Indices, expected.Capacity, scores, scoreTensor.Cols);
        int mismatches = PlanMismatches(expected.Counts, expected.Indices, actual.Counts, actual.Indices, expected.Capacity, ties);
        var over = OutputsToCompare(expected, mismatches, SamePlan(expected.Counts, expected.Indices, actual.Counts, actual.Indices, expected.Capacity),
            () => Run(reference, (actual.Counts, actual.Indices)));
        yield return new ParityResult("anchor plan", shape, mismatches, 0);
        // Prefill chunks attend on tensor cores (bf16 queries and probabilities, as the dense kernels); decode steps in fp32.
        yield return CompareValues("anchor attention", shape, over.Anchor, actual.Anchor, TensorCoreBound);
        yield return CompareValues("sparse attention (head map)", shape, over.Reuse, actual.Reuse, TensorCoreBound);
    }

    /// <summary>
    /// <see cref="IBackend.WritePlan"/>: the reference's anchor plan written into the candidate's own reads back equal,
    /// and the candidate's sparse attention over it, through a selector-swapping head map, matches the reference's.
    /// </summary>
    private static IEnumerable<ParityResult> WrittenPlanCases(string shape, IBackend reference, IBackend candidate, (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) inputs,
        int headDim, int start, int tokens)
    {
        var map = Enumerable.Range(0, inputs.KvHeads).Select(g => inputs.KvHeads - 1 - g).ToArray();
        int rows = QueryTile.Of(start, tokens).Length * inputs.KvHeads, capacity = TopKBudget.For(inputs.Total, 10);
        (int[] Counts, int[] Indices, float[] Output) Run(IBackend b, (int[] Counts, int[] Indices)? given)
        {
            var (cache, q) = Load(b, headDim, inputs, tokens);
            var args = Args(headDim, start, tokens, inputs);
            using var plan = b.AllocatePlan(KeyPlan.UnitsFor(tokens), inputs.KvHeads, capacity);
            using var output = b.Allocate(tokens, inputs.Heads * headDim);
            if (given is { } g)
            {
                b.WritePlan(args, plan, g.Counts, g.Indices);
            }
            else
            {
                b.AnchorAttention(args, new SelectionArgs(10, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false), q, cache, plan, output);
            }
            b.SparseAttention(args, plan, map, q, cache, output);
            var (counts, indices) = ReadPlan(b, plan, rows);
            return (counts, indices, Values(b, output));
        }
        var expected = Run(reference, null);
        var actual = Run(candidate, (expected.Counts, expected.Indices));
        yield return new ParityResult("written plan", shape, PlanMismatches(expected.Counts, expected.Indices, actual.Counts, actual.Indices, capacity, (_, _) => false), 0);
        yield return CompareValues("sparse attention (written plan)", shape, expected.Output, actual.Output, TensorCoreBound);
    }

    /// <summary>Rows <c>[0, rows)</c> of a plan (<see cref="IBackend.ReadPlan"/>).</summary>
    private static (int[] Counts, int[] Indices) ReadPlan(IBackend b, KeyPlan plan, int rows)
    {
        var counts = new int[rows];
        var indices = new int[rows * plan.Capacity];
        b.ReadPlan(plan, counts, indices);
        return (counts, indices);
    }

    private static float[] Values(IBackend b, DeviceTensor tensor)
    {
        var values = new float[tensor.Rows * tensor.Cols];
        b.Read(tensor, values);
        return values;
    }

    /// <summary>
    /// What a candidate's outputs are compared with: the reference's own, or — where the candidate's plan differs from the
    /// reference's by ties alone (<paramref name="mismatches"/> 0) — the reference attending over the candidate's plan
    /// (<paramref name="overCandidatePlan"/>), so that both attend over the same keys. A plan that differs otherwise fails
    /// its own check, and its outputs are held to the reference's.
    /// </summary>
    private static T OutputsToCompare<T>(T expected, int mismatches, bool samePlan, Func<T> overCandidatePlan) =>
        mismatches == 0 && !samePlan ? overCandidatePlan() : expected;

    /// <summary>Whether two plans' rows hold the same position sets.</summary>
    private static bool SamePlan(int[] expectedCounts, int[] expectedIndices, int[] actualCounts, int[] actualIndices, int capacity) =>
        PlanMismatches(expectedCounts, expectedIndices, actualCounts, actualIndices, capacity, (_, _) => false) == 0;

    /// <summary>
    /// Positions in one plan's row and not the other's, or rows of different counts, that score ties cannot explain:
    /// <paramref name="isTie"/> (row, position) says whether a differing position may be in or out by a tie.
    /// </summary>
    private static int PlanMismatches(int[] expectedCounts, int[] expectedIndices, int[] actualCounts, int[] actualIndices, int capacity, Func<int, int, bool> isTie)
    {
        int mismatches = 0;
        for (int row = 0; row < expectedCounts.Length; row++)
        {
            if (expectedCounts[row] != actualCounts[row])
            {
                mismatches++;
                continue;
            }
            var a = new HashSet<int>(expectedIndices.AsSpan(row * capacity, expectedCounts[row]).ToArray());
            var b = new HashSet<int>(actualIndices.AsSpan(row * capacity, actualCounts[row]).ToArray());
            foreach (int i in a.Except(b).Concat(b.Except(a)))
            {
                mismatches += isTie(row, i) ? 0 : 1;
            }
        }
        return mismatches;
    }

    /// <summary>
    /// A tie by scores: the position scores within fp32 summation error of the row's k-th largest score, the least
    /// score of the expected set (scores fp32 <c>[rows, cols]</c>, the reference's).
    /// </summary>
    private static Func<int, int, bool> ScoreTies(int[] expectedCounts, int[] expectedIndices, int capacity, float[] scores, int cols) => (row, i) =>
    {
        var rowScores = scores.AsSpan(row * cols, cols);
        float kth = float.PositiveInfinity;
        foreach (int j in expectedIndices.AsSpan(row * capacity, expectedCounts[row]))
        {
            kth = Math.Min(kth, rowScores[j]);
        }
        return i >= 0 && i < cols && Near(rowScores[i], kth);
    };

    /// <summary>Within fp32 summation error of each other (scores summed in different orders).</summary>
    private static bool Near(float a, float b) => Math.Abs(a - b) <= 1e-5 * Math.Abs(b) + 1e-7;
}
