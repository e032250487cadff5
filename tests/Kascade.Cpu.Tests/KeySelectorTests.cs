using Kascade.Core;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary>
/// The baselines' key selectors on the CPU (<see cref="CpuBackend.SelectKeys"/>) against <see cref="BaselineSelection"/>
/// applied by hand, the state they keep across calls, and <see cref="CpuBackend.SparseAttention"/> over token plans and
/// per-query-head maps against a naive double reference.
/// </summary>
public class KeySelectorTests
{
    private const int KvHeads = 2, Heads = 4, D = 16, Total = 300;

    private sealed record Setup(CpuBackend B, KvCache Cache, float[] Keys, double[][] KeyRows, double[][] ValueRows, Random Rng)
    {
        public AttentionArgs Args(int start, int tokens) => new(0, tokens, start, Heads, KvHeads, D, 1f / MathF.Sqrt(D));

        public float[] Query(int tokens) => Enumerable.Range(0, tokens * Heads * D).Select(_ => (float)(Rng.NextDouble() * 2 - 1)).ToArray();

        /// <summary>KV head g's first n keys, fp32 <c>[n, D]</c>, as BaselineSelection reads them.</summary>
        public float[] HeadKeys(int g, int n) => Enumerable.Range(0, n).SelectMany(j => Keys.AsSpan((j * KvHeads + g) * D, D).ToArray()).ToArray();

        public (int[] Counts, int[] Indices) Read(KeyPlan plan, int rows)
        {
            var counts = new int[rows];
            var indices = new int[rows * plan.Capacity];
            B.ReadPlan(plan, counts, indices);
            return (counts, indices);
        }

        public static int[] Row((int[] Counts, int[] Indices) plan, int row, int capacity) => plan.Indices.AsSpan(row * capacity, plan.Counts[row]).ToArray();
    }

    private static Setup Make()
    {
        var rng = new Random(17);
        var b = new CpuBackend();
        var keys = Enumerable.Range(0, Total * KvHeads * D).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var values = Enumerable.Range(0, Total * KvHeads * D).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var cache = b.AllocateKvCache(new KvCacheShape(1, KvHeads, D, Total));
        b.AppendKv(cache, 0, 0, b.Upload(keys, Total, KvHeads * D), b.Upload(values, Total, KvHeads * D));
        double[][] Rows(float[] flat) => [.. Enumerable.Range(0, Total).Select(j => flat.AsSpan(j * KvHeads * D, KvHeads * D).ToArray().Select(x => (double)x).ToArray())];
        return new Setup(b, cache, keys, Rows(keys), Rows(values), rng);
    }

    /// <summary>Softmax over exactly <paramref name="set"/> of query head h (row t of q), in double.</summary>
    private static double[] Naive(Setup s, float[] q, int t, int h, int[] set)
    {
        int g = h / (Heads / KvHeads);
        var query = q.AsSpan((t * Heads + h) * D, D).ToArray().Select(x => (double)x).ToArray();
        var scores = NaiveKascade.Softmax([.. set.Select(j => Enumerable.Range(0, D).Sum(e => query[e] * s.KeyRows[j][g * D + e]) / Math.Sqrt(D))]);
        return [.. Enumerable.Range(0, D).Select(e => set.Select((j, i) => scores[i] * s.ValueRows[j][g * D + e]).Sum())];
    }

    private static float[] Attend(Setup s, AttentionArgs args, KeyPlan plan, int[] headMap, DeviceTensor q)
    {
        var output = s.B.Allocate(args.Tokens, Heads * D);
        s.B.SparseAttention(args, plan, headMap, q, s.Cache, output);
        var result = new float[args.Tokens * Heads * D];
        s.B.Read(output, result);
        return result;
    }

    [Fact]
    public void Window_plans_give_each_prefill_token_its_own_window_and_attention_over_exactly_it()
    {
        var s = Make();
        var window = new KeySelector.Window(3, 30, 20);
        const int start = 100, tokens = 37;
        var args = s.Args(start, tokens);
        var qValues = s.Query(tokens);
        var q = s.B.Upload(qValues, tokens, Heads * D);
        using var state = s.B.AllocateSelectorState(window, s.Cache.Shape, Heads);
        using var plan = window.AllocatePlan(s.B, Heads, Total, tokens);
        s.B.SelectKeys(args, q, s.Cache, state, plan);
        var read = s.Read(plan, tokens);
        var output = Attend(s, args, plan, new int[KvHeads], q);
        for (int t = 0; t < tokens; t++)
        {
            var set = BaselineSelection.StreamingWindow(start + t + 1, window);
            Assert.Equal(set, Setup.Row(read, t, plan.Capacity));
            for (int h = 0; h < Heads; h++)
            {
                var expected = Naive(s, qValues, t, h, set);
                for (int e = 0; e < D; e++)
                {
                    Assert.True(Math.Abs(expected[e] - output[(t * Heads + h) * D + e]) < 1e-5, $"token {t} head {h} dim {e}");
                }
            }
        }
    }

    [Fact]
    public void Per_head_plans_attend_each_query_head_over_its_own_row()
    {
        var s = Make();
        var sparcas = new KeySelector.PartialScoreTopK(10, 0.25, 64);
        var args = s.Args(Total - 1, 1);
        var qValues = s.Query(1);
        var q = s.B.Upload(qValues, 1, Heads * D);
        using var state = s.B.AllocateSelectorState(sparcas, s.Cache.Shape, Heads);
        using var plan = sparcas.AllocatePlan(s.B, Heads, Total, 1);
        s.B.SelectKeys(args, q, s.Cache, state, plan);
        var read = s.Read(plan, Heads);
        var output = Attend(s, args, plan, [.. Enumerable.Range(0, Heads)], q);
        for (int h = 0; h < Heads; h++)
        {
            var query = qValues.AsSpan(h * D, D);
            var dims = BaselineSelection.LargestDimensions(query, sparcas.Dimensions(D));
            var set = BaselineSelection.PartialScoreTopK(query, dims, s.HeadKeys(h / 2, Total), Total, TopKBudget.For(Total, 10));
            Assert.Equal(set, Setup.Row(read, h, plan.Capacity));
            var expected = Naive(s, qValues, 0, h, set);
            for (int e = 0; e < D; e++)
            {
                Assert.True(Math.Abs(expected[e] - output[h * D + e]) < 1e-5, $"head {h} dim {e}");
            }
        }
    }

    [Fact]
    public void Quest_page_bounds_kept_chunk_by_chunk_give_the_plan_of_bounds_built_at_once()
    {
        var s = Make();
        var quest = new KeySelector.PageTopK(20, 16);
        using var state = s.B.AllocateSelectorState(quest, s.Cache.Shape, Heads);
        // Prefill in ragged chunks, then two decode steps: the bounds of pages a chunk only began are redone by the next.
        foreach (var (start, tokens) in new[] { (0, 21), (21, 100), (121, 177), (298, 1) })
        {
            s.B.UpdateSelectorState(s.Args(start, tokens), s.Cache, state);
        }
        var args = s.Args(Total - 1, 1);
        s.B.UpdateSelectorState(args, s.Cache, state);
        var qValues = s.Query(1);
        using var plan = quest.AllocatePlan(s.B, Heads, Total, 1);
        s.B.SelectKeys(args, s.B.Upload(qValues, 1, Heads * D), s.Cache, state, plan);
        var read = s.Read(plan, Heads);
        for (int h = 0; h < Heads; h++)
        {
            var bounds = BaselineSelection.PageBounds(s.HeadKeys(h / 2, Total), Total, D, 16);
            Assert.Equal(BaselineSelection.QuestPages(qValues.AsSpan(h * D, D), bounds, Total, 16, TopKBudget.For(Total, 20)), Setup.Row(read, h, plan.Capacity));
        }
    }

    [Fact]
    public void SparCas_keeps_its_dimensions_for_the_refresh_steps_then_chooses_again()
    {
        var s = Make();
        var sparcas = new KeySelector.PartialScoreTopK(10, 0.25, 3);
        using var state = s.B.AllocateSelectorState(sparcas, s.Cache.Shape, Heads);
        using var plan = sparcas.AllocatePlan(s.B, Heads, Total, 1);
        var args = s.Args(Total - 1, 1);
        int[]? dims = null;
        for (int call = 0; call < 5; call++)
        {
            var qValues = s.Query(1);
            s.B.SelectKeys(args, s.B.Upload(qValues, 1, Heads * D), s.Cache, state, plan);
            var query = qValues.AsSpan(0, D);
            if (call % 3 == 0)
            {
                dims = BaselineSelection.LargestDimensions(query, sparcas.Dimensions(D));
            }
            var expected = BaselineSelection.PartialScoreTopK(query, dims!, s.HeadKeys(0, Total), Total, TopKBudget.For(Total, 10));
            Assert.Equal(expected, Setup.Row(s.Read(plan, Heads), 0, plan.Capacity));
        }
    }

    [Fact]
    public void Shared_selectors_match_their_reference_functions()
    {
        var s = Make();
        var args = s.Args(Total - 1, 1);
        var qValues = s.Query(1);
        var q = s.B.Upload(qValues, 1, Heads * D);
        float[][] Scores(bool softmax) => [.. Enumerable.Range(0, Heads).Select(h =>
        {
            var keys = s.HeadKeys(h / 2, Total);
            var row = Enumerable.Range(0, Total).Select(j => System.Numerics.Tensors.TensorPrimitives.Dot(qValues.AsSpan(h * D, D), keys.AsSpan(j * D, D)) / MathF.Sqrt(D)).ToArray();
            if (softmax)
            {
                System.Numerics.Tensors.TensorPrimitives.SoftMax(row, row);
            }
            return row;
        })];
        int budget = TopKBudget.For(Total, 20);
        var max = new KeySelector.MaxPooledTopK(20);
        var union = new KeySelector.UnionTopK(20, 4, 0.25);
        foreach (var (selector, expected) in new (KeySelector, int[])[]
        {
            (max, BaselineSelection.MaxPooledTopK(Scores(softmax: true), Total, budget)),
            (union, BaselineSelection.LessIsMoreSet(Scores(softmax: false), Total, budget, union)),
        })
        {
            using var state = s.B.AllocateSelectorState(selector, s.Cache.Shape, Heads);
            using var plan = selector.AllocatePlan(s.B, Heads, Total, 1);
            s.B.SelectKeys(args, q, s.Cache, state, plan);
            // Sets compare as sets: the scores are summed in a different order here (ties at the k-th score are measure-zero).
            Assert.Equal(expected.Order(), Setup.Row(s.Read(plan, 1), 0, plan.Capacity).Order());
        }
    }

    [Fact]
    public void A_decode_selector_refuses_a_prefill_chunk_and_a_small_plan_is_refused()
    {
        var s = Make();
        var quest = new KeySelector.PageTopK(10, 16);
        using var state = s.B.AllocateSelectorState(quest, s.Cache.Shape, Heads);
        var q = s.B.Upload(s.Query(2), 2, Heads * D);
        using var plan = quest.AllocatePlan(s.B, Heads, Total, 1);
        Assert.Contains("decode steps only", Assert.Throws<ArgumentException>(() => s.B.SelectKeys(s.Args(10, 2), q, s.Cache, state, plan)).Message);
        using var small = s.B.AllocatePlan(1, Heads, 16);
        Assert.Contains("cannot hold", Assert.Throws<ArgumentException>(() => s.B.SelectKeys(s.Args(Total - 1, 1), q.Take(1), s.Cache, state, small)).Message);
    }
}
