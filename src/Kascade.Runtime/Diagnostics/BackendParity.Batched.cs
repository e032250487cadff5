using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// Batched decode (<see cref="IBatchedDecode"/>) against the reference's: dense attention, and Kascade's layer 0, anchor
/// (plan up to score ties, judged on the reference's scores of each sequence alone; its sparse output) and a reuse layer
/// reading the anchor's plan through a head map that swaps the selectors, over batches of 1–64 sequences, head dims 64
/// and 128, GQA groups 1–16, odd lengths and caches longer than the keys they hold (a recorded step's regime: rows
/// span the capacity). The reference runs each sequence through the single-sequence op. The Kascade cases run where
/// the candidate runs them (<see cref="IBatchedDecode.RunsBatchedKascade"/>: the GPU's need its fast kernels); so do the
/// baselines' selectors (<see cref="BatchedSelectors"/>: each sequence's plan up to the ties of the score it ranks by,
/// and the sparse attention over the plans through the selector's head map).
/// </summary>
public static partial class BackendParity
{
    /// <summary>
    /// (batch, keys, spare, head dim, group): a single sequence, odd batches and lengths, the paper's batch 64, a group of
    /// 16, one key, long rows (the cluster Top-k's); spare positions of capacity past the keys.
    /// </summary>
    private static readonly (int Batch, int Keys, int Spare, int HeadDim, int Group)[] BatchedShapes =
        [(1, 1000, 0, 128, 4), (5, 700, 300, 128, 4), (3, 2000, 0, 128, 1), (7, 333, 31, 64, 2), (64, 300, 0, 128, 8), (3, 1500, 100, 128, 16),
         (16, 1, 0, 128, 4), (4, 20000, 4000, 128, 4), (2, 9000, 0, 64, 8)];

    /// <summary>
    /// The baselines' selectors of the batched cases, each at its defaults but for a 10% budget (sparcas choosing its
    /// dimensions again every second selection, so its second selection reads the first's).
    /// </summary>
    private static readonly KeySelector[] BatchedSelectors =
        [new KeySelector.MaxPooledTopK(10), new KeySelector.UnionTopK(10, 4, 0.25), new KeySelector.PageTopK(10, 16), new KeySelector.PartialScoreTopK(10, 0.25, 2), new KeySelector.Window(4, 30, 128)];

    /// <summary>KV heads of the batched cases (the paper's model has 8; 2 keep the grid's CPU time down).</summary>
    private const int BatchedKvHeads = 2;

    /// <summary>The batched cases alone (<see cref="Run"/> includes them where both backends have batched decode ops).</summary>
    public static IReadOnlyList<ParityResult> RunBatched(IBatchedDecode reference, IBatchedDecode candidate)
    {
        var results = new List<ParityResult>();
        BatchedCases(reference, candidate, new Random(103), results.Add);
        return results;
    }

    private static void BatchedCases(IBatchedDecode reference, IBatchedDecode candidate, Random rng, Action<ParityResult> record)
    {
        var kascade = new SelectionArgs(10, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false);
        foreach (var (batch, keys, spare, headDim, group) in BatchedShapes)
        {
            var inputs = RandomBatch(rng, batch, keys, spare, headDim, group);
            string shape = $"batch {batch} d {headDim} group {group} keys {keys}{(spare > 0 ? $" of {keys + spare}" : "")}";
            record(CompareValues("batched decode", shape, BatchedDense(reference, inputs), BatchedDense(candidate, inputs), TensorCoreBound));
            var earlier = Random(rng, inputs.Q.Length, 2);
            foreach (var selector in BatchedSelectors)
            {
                if (!candidate.RunsBatchedSelector(inputs.Args, selector))
                {
                    record(ParityResult.Skipped("batched baseline plan", $"{shape}, {selector}", "the candidate does not run this selector batched at this shape"));
                    record(ParityResult.Skipped("batched baseline sparse attention", $"{shape}, {selector}", "the candidate does not run this selector batched at this shape"));
                    continue;
                }
                foreach (var r in BatchedSelectorCases(reference, candidate, inputs, earlier, shape, selector))
                {
                    record(r);
                }
            }
            if (!candidate.RunsBatchedKascade(inputs.Args))
            {
                record(ParityResult.Skipped("batched anchor plan", shape, "the candidate does not run batched Kascade at this shape"));
                continue;
            }
            foreach (var r in BatchedAnchorCases(reference, candidate, inputs, shape, kascade))
            {
                record(r);
            }
            foreach (var r in BatchedAnchorCases(reference, candidate, inputs, shape + ", layer 0", kascade with { DenseOutput = true }))
            {
                record(r);
            }
            if (batch % 2 == 1)
            {
                foreach (var r in BatchedAnchorCases(reference, candidate, inputs, shape + ", all heads, reference budget", kascade with { PoolAllHeads = true, Rule = BudgetRule.Reference, TopKPercent = 20 }))
                {
                    record(r);
                }
            }
            else
            {
                foreach (var r in BatchedAnchorCases(reference, candidate, inputs, shape + ", layer 0, bf16 scores", kascade with { DenseOutput = true, Precision = ScorePrecision.Bf16 }))
                {
                    record(r);
                }
            }
        }
    }

    /// <summary>
    /// A batch's inputs: bf16-exact keys and values per sequence (<c>[keys, KvHeads·HeadDim]</c> each) in a cache of
    /// <paramref name="Capacity"/> positions, and fp32 queries <c>[batch, Heads·HeadDim]</c>.
    /// </summary>
    private sealed record BatchedInputs(float[][] K, float[][] V, float[] Q, int Keys, int Capacity, int HeadDim, int Heads)
    {
        public AttentionArgs Args => new(0, K.Length, Keys - 1, Heads, BatchedKvHeads, HeadDim, 1f / MathF.Sqrt(HeadDim));

        /// <summary>A cache of one layer per sequence holding the batch's keys and values, and the queries.</summary>
        public (KvCache Cache, DeviceTensor Q) Load(IBackend b)
        {
            int width = BatchedKvHeads * HeadDim;
            var cache = b.AllocateKvCache(new KvCacheShape(K.Length, BatchedKvHeads, HeadDim, Capacity));
            for (int s = 0; s < K.Length; s++)
            {
                using var k = b.Upload(K[s], Keys, width);
                using var v = b.Upload(V[s], Keys, width);
                b.AppendKv(cache, s, 0, k, v);
            }
            return (cache, b.Upload(Q, K.Length, Heads * HeadDim));
        }
    }

    private static BatchedInputs RandomBatch(Random rng, int batch, int keys, int spare, int headDim, int group)
    {
        int width = BatchedKvHeads * headDim, heads = BatchedKvHeads * group;
        var k = Enumerable.Range(0, batch).Select(_ => Bf16(Random(rng, keys * width, 1))).ToArray();
        var v = Enumerable.Range(0, batch).Select(_ => Bf16(Random(rng, keys * width, 1))).ToArray();
        return new BatchedInputs(k, v, Random(rng, batch * heads * headDim, 2), keys, keys + spare, headDim, heads);
    }

    private static float[] BatchedDense(IBatchedDecode backend, BatchedInputs inputs)
    {
        var b = (IBackend)backend;
        var (cache, q) = inputs.Load(b);
        using (cache)
        using (q)
        using (var output = b.Allocate(inputs.K.Length, inputs.Heads * inputs.HeadDim))
        {
            backend.BatchedDecodeAttention(inputs.Args, q, cache, output);
            var result = new float[output.Rows * output.Cols];
            b.Read(output, result);
            return result;
        }
    }

    /// <summary>A batched anchor's plan and output, and a reuse layer's output over it through a selector-swapping head map.</summary>
    private static IEnumerable<ParityResult> BatchedAnchorCases(IBatchedDecode reference, IBatchedDecode candidate, BatchedInputs inputs, string shape, SelectionArgs selection)
    {
        int batch = inputs.K.Length, selectors = selection.PoolAllHeads ? 1 : BatchedKvHeads, capacity = TopKBudget.For(inputs.Capacity, selection.TopKPercent);
        var map = Enumerable.Range(0, BatchedKvHeads).Select(g => selection.PoolAllHeads ? 0 : BatchedKvHeads - 1 - g).ToArray();
        var anchorMap = Enumerable.Range(0, BatchedKvHeads).Select(g => selection.PoolAllHeads ? 0 : g).ToArray();
        (int[] Counts, int[] Indices, float[] Anchor, float[] Reuse) Run(IBatchedDecode backend, (int[] Counts, int[] Indices)? given = null)
        {
            var b = (IBackend)backend;
            var (cache, q) = inputs.Load(b);
            using (cache)
            using (q)
            using (var plan = b.AllocatePlan(batch, selectors, capacity))
            using (var anchor = b.Allocate(batch, inputs.Heads * inputs.HeadDim))
            using (var reuse = b.Allocate(batch, inputs.Heads * inputs.HeadDim))
            {
                backend.BatchedAnchorAttention(inputs.Args, selection, q, cache, plan, anchor);
                if (given is { } g)
                {
                    b.WritePlan(inputs.Args with { Tokens = 1 }, plan, g.Counts, g.Indices);
                    if (!selection.DenseOutput)
                    {
                        backend.BatchedSparseAttention(inputs.Args, plan, anchorMap, q, cache, anchor);
                    }
                }
                backend.BatchedSparseAttention(inputs.Args, plan, map, q, cache, reuse);
                var (counts, indices) = ReadPlan(b, plan, plan.Rows);
                return (counts, indices, Values(b, anchor), Values(b, reuse));
            }
        }
        var actual = Run(candidate);
        var expected = Run(reference);
        // Each sequence's decode-step scores on the reference, one unit of `selectors` rows after another.
        var scores = new float[batch * selectors * inputs.Keys];
        for (int s = 0; s < batch; s++)
        {
            var q = inputs.Q.AsSpan(s * inputs.Heads * inputs.HeadDim, inputs.Heads * inputs.HeadDim).ToArray();
            q = selection.Precision == ScorePrecision.Bf16 ? Bf16(q) : q;
            using var tensor = Scores((IBackend)reference, (inputs.K[s], inputs.V[s], q, BatchedKvHeads, inputs.Heads, inputs.Keys), inputs.HeadDim, inputs.Keys - 1, 1, selection.Pooling, selectors);
            ((IBackend)reference).Read(tensor, scores.AsSpan(s * selectors * inputs.Keys, selectors * inputs.Keys));
        }
        var ties = ScoreTies(expected.Counts, expected.Indices, capacity, scores, inputs.Keys);
        int mismatches = PlanMismatches(expected.Counts, expected.Indices, actual.Counts, actual.Indices, capacity, ties);
        var over = OutputsToCompare(expected, mismatches, SamePlan(expected.Counts, expected.Indices, actual.Counts, actual.Indices, capacity),
            () => Run(reference, (actual.Counts, actual.Indices)));
        yield return new ParityResult("batched anchor plan", shape, mismatches, 0);
        yield return CompareValues("batched anchor attention", shape, over.Anchor, actual.Anchor, TensorCoreBound);
        yield return CompareValues("batched sparse attention (head map)", shape, over.Reuse, actual.Reuse, TensorCoreBound);
    }

    /// <summary>
    /// A baseline selector's batched plan (each sequence's state built as a session builds it: an update over its cached
    /// keys, then the step's) and the sparse attention over it; sparcas selects twice, the first time with
    /// <paramref name="earlier"/> queries (fp32 <c>[batch, Heads·HeadDim]</c>), which choose the dimensions the second reads.
    /// </summary>
    private static IEnumerable<ParityResult> BatchedSelectorCases(IBatchedDecode reference, IBatchedDecode candidate, BatchedInputs inputs, float[] earlier, string shape, KeySelector selector)
    {
        int batch = inputs.K.Length, heads = inputs.Heads, selectors = selector.Selectors(heads), width = heads * inputs.HeadDim;
        int[] headMap = selectors == 1 ? new int[BatchedKvHeads] : [.. Enumerable.Range(0, heads)];
        (int[] Counts, int[] Indices, float[] Output, int Capacity) Run(IBatchedDecode backend, (int[] Counts, int[] Indices)? given = null)
        {
            var b = (IBackend)backend;
            var args = inputs.Args;
            var (cache, q) = inputs.Load(b);
            using (cache)
            using (q)
            using (var state = b.AllocateSelectorState(selector, new KvCacheShape(batch, BatchedKvHeads, inputs.HeadDim, inputs.Capacity), heads))
            using (var plan = selector.AllocatePlan(b, heads, inputs.Capacity, 1, batch))
            using (var output = b.Allocate(batch, width))
            {
                for (int s = 0; s < batch && inputs.Keys > 1; s++)
                {
                    b.UpdateSelectorState(args with { Layer = s, Tokens = inputs.Keys - 1, StartPosition = 0 }, cache, state);
                }
                backend.BatchedUpdateSelectorState(args, cache, state);
                if (selector is KeySelector.PartialScoreTopK)
                {
                    using var first = b.Upload(earlier, batch, width);
                    backend.BatchedSelectKeys(args, first, cache, state, plan);
                }
                backend.BatchedSelectKeys(args, q, cache, state, plan);
                if (given is { } g)
                {
                    b.WritePlan(args with { Tokens = 1 }, plan, g.Counts, g.Indices);
                }
                backend.BatchedSparseAttention(args, plan, headMap, q, cache, output);
                return ReadPlanAndOutput(b, plan, plan.Rows, output);
            }
        }
        var actual = Run(candidate);
        var expected = Run(reference);
        int mismatches = 0, capacity = expected.Capacity;
        for (int s = 0; s < batch; s++)
        {
            int[] Rows(int[] values, int perRow) => values.AsSpan(s * selectors * perRow, selectors * perRow).ToArray();
            var (expectedCounts, expectedIndices) = (Rows(expected.Counts, 1), Rows(expected.Indices, capacity));
            var sequence = (inputs.K[s], inputs.V[s], inputs.Q.AsSpan(s * width, width).ToArray(), BatchedKvHeads, heads, inputs.Keys);
            var ties = SelectorTies(selector, sequence, earlier.AsSpan(s * width, width).ToArray(), inputs.HeadDim, expectedCounts, expectedIndices, capacity);
            mismatches += PlanMismatches(expectedCounts, expectedIndices, Rows(actual.Counts, 1), Rows(actual.Indices, capacity), capacity, ties);
        }
        var over = OutputsToCompare(expected, mismatches, SamePlan(expected.Counts, expected.Indices, actual.Counts, actual.Indices, capacity),
            () => Run(reference, (actual.Counts, actual.Indices)));
        string name = $"{shape}, {selector}";
        yield return new ParityResult("batched baseline plan", name, mismatches, 0);
        yield return CompareValues("batched baseline sparse attention", name, over.Output, actual.Output, Absolute);
    }
}
