using Kascade.Core;
using Kascade.Cpu;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary>Kascade's selection and sparse attention on the CPU backend, against hand-computed cases and <see cref="NaiveKascade"/>.</summary>
public class KascadeAttentionTests
{
    [Theory]
    [InlineData(1, 10, 1)]
    [InlineData(100, 10, 100)]
    [InlineData(128, 10, 128)]
    [InlineData(1000, 10, 128)]
    [InlineData(1280, 10, 128)]
    [InlineData(1289, 10, 128)]
    [InlineData(1290, 10, 256)]
    [InlineData(2000, 10, 256)]
    [InlineData(8192, 10, 896)]
    [InlineData(5000, 100, 5000)]
    [InlineData(5000, 50, 2560)]
    public void Budget_rule(int n, double percent, int expected) => Assert.Equal(expected, TopKBudget.For(n, percent));

    /// <summary>
    /// Both budget rules by hand, p = 10. Decode over n keys: rounded k(n); reference min(max(128, ⌊n/10⌋), n) − 32.
    /// Prefill tile starting at s in a chunk ending at n: rounded k(s); reference min(that k, max(128, ⌊s/10⌋)), both
    /// at most the s candidates.
    /// </summary>
    [Theory]
    // tile start s (−1: a decode step), chunk end n, rounded, reference
    [InlineData(-1, 4096, 512, 377)]     // decode: roundUp128(409) = 512; 409 − 32
    [InlineData(-1, 100, 100, 68)]       // decode of 100 keys: all of them; min(128, 100) − 32
    [InlineData(-1, 1290, 256, 97)]      // decode: roundUp128(129); 129 − 32
    [InlineData(-1, 20, 20, 20)]         // 20 keys: the reference has no k (20 − 32 < 1), all are kept
    [InlineData(2048, 4096, 256, 204)]   // k(2048) = roundUp128(204); min(377, max(128, 204))
    [InlineData(640, 4096, 128, 128)]    // k(640) = 128; min(377, 128)
    [InlineData(96, 4096, 96, 96)]       // 96 candidates: all, under both rules
    [InlineData(8160, 8192, 896, 787)]   // roundUp128(816) = 896; min(819 − 32, max(128, 816))
    public void Budget_rules_by_hand(int tileStart, int chunkEnd, int rounded, int reference)
    {
        var tile = tileStart < 0 ? QueryTile.Of(chunkEnd - 1, 1)[0] : new QueryTile(tileStart, Math.Min(tileStart + 32, chunkEnd), tileStart, tileStart);
        Assert.Equal(rounded, TopKBudget.ForTile(tile, chunkEnd, 10, BudgetRule.Rounded));
        Assert.Equal(reference, TopKBudget.ForTile(tile, chunkEnd, 10, BudgetRule.Reference));
    }

    [Fact]
    public void Tiles_are_absolute_32_position_tiles_and_decode_is_one_tile_over_all_keys()
    {
        Assert.Equal(
            [new QueryTile(0, 32, 0, 0), new QueryTile(32, 64, 32, 32), new QueryTile(64, 70, 64, 64)],
            QueryTile.Of(0, 70));
        // A chunk that starts inside a tile: the tile's diagonal reaches back to its start, candidates end there.
        Assert.Equal([new QueryTile(40, 64, 32, 32), new QueryTile(64, 70, 64, 64)], QueryTile.Of(40, 30));
        Assert.Equal([new QueryTile(100, 101, 101, 101)], QueryTile.Of(100, 1));
    }

    /// <summary>
    /// Hand-built case: one KV head, head dim 4, a tile at 160..191 (rolling budget k(160) = 128 of 160 candidates).
    /// Every query points along e0; 32 chosen keys point against it, so the selection is exactly the other 128
    /// (equal scores, so in position order); the diagonal keys also point against it but are attended regardless.
    /// </summary>
    [Fact]
    public void Rolling_budget_drops_the_worst_keys_and_the_diagonal_tile_is_always_attended()
    {
        const int d = 4, start = 160, tokens = 32;
        var low = Enumerable.Range(0, 32).Select(i => i * 5).ToHashSet();
        float[] Key(int j) => low.Contains(j) || j >= start ? [-4f, 0, 0, 0] : [0f, 0, 0, 0];
        using var backend = new CpuBackend();
        using var cache = backend.AllocateKvCache(new KvCacheShape(1, 1, d, start + tokens));
        var k = (CpuTensor)backend.Allocate(start + tokens, d);
        var v = (CpuTensor)backend.Allocate(start + tokens, d);
        for (int j = 0; j < start + tokens; j++)
        {
            Key(j).CopyTo(k.Row(j));
            v.Row(j)[1] = j >= start ? 1f : 0f; // value channel 1 marks diagonal keys
        }
        backend.AppendKv(cache, 0, 0, k, v);
        var q = (CpuTensor)backend.Allocate(tokens, d);
        for (int t = 0; t < tokens; t++)
        {
            q.Row(t)[0] = 1f;
        }
        var output = (CpuTensor)backend.Allocate(tokens, d);
        var args = new AttentionArgs(0, tokens, start, 1, 1, d, 0.5f);
        using var plan = (CpuKeyPlan)backend.AllocatePlan(KeyPlan.UnitsFor(tokens), 1, TopKBudget.For(start + tokens, 10));
        backend.AnchorAttention(args, new SelectionArgs(10, ScorePooling.PostSoftmax, false, false), q, cache, plan, output);

        Assert.Equal(Enumerable.Range(0, start).Where(j => !low.Contains(j)).ToArray(), plan.Row(0).ToArray());
        // Query t sees 128 selected keys of score 0 and t + 1 diagonal keys of score −2: diagonal mass (t+1)e⁻²/(128 + (t+1)e⁻²).
        for (int t = 0; t < tokens; t++)
        {
            double diag = (t + 1) * Math.Exp(-2);
            Assert.Equal(diag / (128 + diag), output.Row(t)[1], 5);
        }
    }

    public static TheoryData<int, int, int, int, double, ScorePooling, bool> Grid()
    {
        var data = new TheoryData<int, int, int, int, double, ScorePooling, bool>();
        foreach (var (headDim, group) in new[] { (64, 1), (64, 2), (128, 4), (64, 8) })
        {
            data.Add(headDim, group, 0, 300, 10.0, ScorePooling.PostSoftmax, false);
            data.Add(headDim, group, 290, 45, 10.0, ScorePooling.PostSoftmax, false);
            data.Add(headDim, group, 333, 1, 10.0, ScorePooling.PostSoftmax, false);
        }
        data.Add(64, 2, 0, 300, 10.0, ScorePooling.PreSoftmax, false);
        data.Add(64, 2, 0, 300, 10.0, ScorePooling.PostSoftmax, true);
        data.Add(64, 4, 400, 1, 30.0, ScorePooling.PostSoftmax, true);
        return data;
    }

    /// <summary>Anchor selection (as sets, near-ties allowed) and the reuse output over the plan, against the naive double version.</summary>
    [Theory]
    [MemberData(nameof(Grid))]
    public void Anchor_and_reuse_match_the_naive_reference(int headDim, int group, int start, int tokens, double percent, ScorePooling pooling, bool poolAll)
    {
        const int kvHeads = 2;
        var x = RandomAttention.Make(headDim, group, kvHeads, start, tokens, seed: start + tokens + group);
        var (_, plan, output) = x.RunAnchor(new SelectionArgs(percent, pooling, poolAll, false));

        var expected = NaiveKascade.Select(x.Q, x.K, start, x.Heads, kvHeads, headDim, percent, pooling, poolAll);
        Assert.Equal(expected.Count, plan.Count);
        for (int r = 0; r < expected.Count; r++)
        {
            var (rows, pooled) = expected[r];
            Assert.Equal(rows.Length, plan[r].Length);
            double boundary = rows.Length > 0 ? pooled[rows[^1]] : 0;
            foreach (int j in plan[r].Except(rows).Concat(rows.Except(plan[r])))
            {
                Assert.True(Math.Abs(pooled[j] - boundary) <= 1e-4 * Math.Max(1, Math.Abs(boundary)), $"row {r}: position {j} (pooled {pooled[j]}) differs from the reference selection (boundary {boundary})");
            }
        }
        int pools = poolAll ? 1 : kvHeads;
        var map = Enumerable.Range(0, kvHeads).Select(g => poolAll ? 0 : g).ToArray();
        var reference = NaiveKascade.Attend(x.Q, x.K, x.V, start, x.Heads, kvHeads, headDim, plan, pools, map);
        Compare.Close(reference.SelectMany(r => r).Select(v => (float)v).ToArray(), output, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "anchor output");
    }

    [Theory]
    [InlineData(64, 2, 0, 300)]
    [InlineData(128, 4, 250, 40)]
    [InlineData(64, 1, 500, 1)]
    public void At_100_percent_kascade_and_oracle_equal_dense(int headDim, int group, int start, int tokens)
    {
        var x = RandomAttention.Make(headDim, group, 2, start, tokens, seed: 11);
        var dense = x.RunDense();
        var (_, _, anchor) = x.RunAnchor(new SelectionArgs(100, ScorePooling.PostSoftmax, false, false));
        Compare.Close(dense, anchor, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "kascade p=100 vs dense");
        Compare.Close(dense, x.RunOracle(100), Tolerances.KernelAbsolute, Tolerances.KernelRelative, "oracle p=100 vs dense");
    }

    [Fact]
    public void Reuse_with_the_identity_map_at_the_anchor_equals_the_anchor()
    {
        var x = RandomAttention.Make(64, 2, 2, 200, 100, seed: 5);
        var (plan, _, anchor) = x.RunAnchor(new SelectionArgs(10, ScorePooling.PostSoftmax, false, false));
        var reuse = x.RunReuse(plan, [0, 1]);
        Assert.Equal(anchor, reuse);
        Assert.NotEqual(anchor, x.RunReuse(plan, [1, 0]));
    }

    [Fact]
    public void Reference_budget_rule_sizes_each_tiles_plan_row()
    {
        var x = RandomAttention.Make(64, 2, 2, 1200, 900, seed: 8);
        var tiles = QueryTile.Of(1200, 900);
        // The chunk ends at n = 2100: k = 210 − 32 = 178, and tile s keeps min(178, max(128, ⌊s/10⌋)): 128 up to
        // s = 1280, then ⌊s/10⌋ (160 at s = 1600), then 178 from s = 1792. Rounded: k(s), 128 then 256.
        var (_, reference, _) = x.RunAnchor(new SelectionArgs(10, ScorePooling.PostSoftmax, false, false, BudgetRule.Reference));
        Assert.Equal(tiles.SelectMany(t => Enumerable.Repeat(Math.Min(178, Math.Max(128, t.CandidateEnd / 10)), 2)), reference.Select(r => r.Length));
        Assert.Contains(160, reference.Select(r => r.Length));
        var (_, rounded, _) = x.RunAnchor(new SelectionArgs(10, ScorePooling.PostSoftmax, false, false));
        Assert.Equal(tiles.SelectMany(t => Enumerable.Repeat(t.CandidateEnd < 1290 ? 128 : 256, 2)), rounded.Select(r => r.Length));
    }

    [Fact]
    public void Dense_output_anchor_still_selects()
    {
        var x = RandomAttention.Make(64, 2, 2, 200, 100, seed: 6);
        var (_, rows, output) = x.RunAnchor(new SelectionArgs(10, ScorePooling.PostSoftmax, false, DenseOutput: true));
        Assert.Equal(x.RunDense(), output);
        Assert.Equal(QueryTile.Of(200, 100).Length * 2, rows.Count);
        Assert.All(rows.Skip(2), r => Assert.Equal(128, r.Length));
    }

    public static TheoryData<int, int, int, int, ScorePooling, bool> PoolingGrid()
    {
        var data = new TheoryData<int, int, int, int, ScorePooling, bool>();
        foreach (int group in new[] { 1, 2, 4, 8 })
        {
            data.Add(64, group, 0, 70, ScorePooling.PostSoftmax, false);
            data.Add(128, group, 290, 45, ScorePooling.PostSoftmax, false);
        }
        data.Add(64, 2, 333, 1, ScorePooling.PostSoftmax, false);
        data.Add(64, 2, 17, 50, ScorePooling.PreSoftmax, false);
        data.Add(64, 4, 100, 40, ScorePooling.PostSoftmax, true);
        data.Add(128, 2, 64, 33, ScorePooling.PreSoftmax, true);
        return data;
    }

    /// <summary>
    /// The anchors' pooled tile scores against a double reference: per tile and pool, every key up to the tile's end,
    /// candidates and diagonal block alike, with 0 from queries that do not see the key.
    /// </summary>
    [Theory]
    [MemberData(nameof(PoolingGrid))]
    public void Pooled_tile_scores_match_the_naive_reference(int headDim, int group, int start, int tokens, ScorePooling pooling, bool poolAll)
    {
        const int kvHeads = 2;
        var x = RandomAttention.Make(headDim, group, kvHeads, start, tokens, seed: 3 * start + tokens + group);
        int pools = poolAll ? 1 : kvHeads, visible = start + tokens;
        var actual = x.RunPooled(pooling, pools);
        var expected = new float[actual.Length];
        var tiles = QueryTile.Of(start, tokens);
        for (int ti = 0; ti < tiles.Length; ti++)
        {
            for (int g = 0; g < pools; g++)
            {
                for (int h = 0; h < x.Heads; h++)
                {
                    if (!poolAll && h / group != g)
                    {
                        continue;
                    }
                    for (int query = tiles[ti].QueryStart; query < tiles[ti].QueryEnd; query++)
                    {
                        var scores = NaiveKascade.Scores(x.Q[query - start], x.K, h, h / group, headDim, query + 1);
                        var pooledBy = pooling == ScorePooling.PostSoftmax ? NaiveKascade.Softmax(scores) : scores;
                        for (int j = 0; j <= query; j++)
                        {
                            expected[(ti * pools + g) * visible + j] += (float)pooledBy[j];
                        }
                    }
                }
            }
        }
        // Pre-softmax sums of raw scores cancel: their error is relative to the largest term, not to the sum.
        double absolute = pooling == ScorePooling.PreSoftmax ? 1e-3 * tokens : Tolerances.KernelAbsolute;
        Compare.Close(expected, actual, absolute, Tolerances.KernelRelative, "pooled tile scores");
    }

    [Theory]
    [InlineData(64, 2, 0, 40)]
    [InlineData(128, 4, 250, 7)]
    [InlineData(64, 8, 31, 1)]
    public void Attention_probabilities_match_the_naive_softmax(int headDim, int group, int start, int tokens)
    {
        var x = RandomAttention.Make(headDim, group, 2, start, tokens, seed: 5);
        var actual = x.RunProbabilities();
        int visible = start + tokens;
        var expected = new float[actual.Length];
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < x.Heads; h++)
            {
                var p = NaiveKascade.Softmax(NaiveKascade.Scores(x.Q[t], x.K, h, h / group, headDim, start + t + 1));
                for (int j = 0; j < p.Length; j++)
                {
                    expected[(t * x.Heads + h) * visible + j] = (float)p[j];
                }
            }
        }
        Compare.Close(expected, actual, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "attention probabilities");
    }

    [Fact]
    public void Oracle_matches_a_per_query_top_k_reference()
    {
        const int d = 64, start = 300, tokens = 3;
        var x = RandomAttention.Make(d, 2, 2, start, tokens, seed: 9);
        var output = x.RunOracle(10);
        var expected = new float[output.Length];
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < x.Heads; h++)
            {
                int g = h / 2, visible = start + t + 1;
                var p = NaiveKascade.Softmax(NaiveKascade.Scores(x.Q[t], x.K, h, g, d, visible));
                var chosen = Enumerable.Range(0, visible).OrderByDescending(j => p[j]).Take(TopKBudget.For(visible, 10)).ToArray();
                double mass = chosen.Sum(j => p[j]);
                for (int e = 0; e < d; e++)
                {
                    expected[(t * x.Heads + h) * d + e] = (float)(chosen.Sum(j => p[j] * x.V[j][g * d + e]) / mass);
                }
            }
        }
        Compare.Close(expected, output, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "oracle");
    }
}

/// <summary>Random q/k/v for one layer and a chunk, and runners for each attention path of the CPU backend.</summary>
internal sealed record RandomAttention(int HeadDim, int Heads, int KvHeads, int Start, double[][] Q, double[][] K, double[][] V)
{
    private int Tokens => Q.Length;

    /// <summary>Values are rounded to fp32 so the double reference sees exactly what the backend sees.</summary>
    public static RandomAttention Make(int headDim, int group, int kvHeads, int start, int tokens, int seed)
    {
        var rng = new Random(seed);
        double[][] Rows(int n, int width, double scale) =>
            Enumerable.Range(0, n).Select(_ => Enumerable.Range(0, width).Select(_ => (double)(float)(scale * (rng.NextDouble() * 2 - 1))).ToArray()).ToArray();
        int heads = group * kvHeads;
        return new RandomAttention(headDim, heads, kvHeads, start, Rows(tokens, heads * headDim, 3), Rows(start + tokens, kvHeads * headDim, 1), Rows(start + tokens, kvHeads * headDim, 1));
    }

    /// <summary>An anchor over the chunk: its plan, the plan's rows (tile-major, then selector) and its output.</summary>
    public (CpuKeyPlan Plan, IReadOnlyList<int[]> Rows, float[] Output) RunAnchor(SelectionArgs selection)
    {
        int selectors = selection.PoolAllHeads ? 1 : KvHeads;
        var plan = new CpuKeyPlan(KeyPlan.UnitsFor(Tokens), selectors, TopKBudget.For(Start + Tokens, selection.TopKPercent), PlanUnit.Tile);
        var output = Run((b, args, q, cache, o) => b.AnchorAttention(args, selection, q, cache, plan, o));
        var rows = Enumerable.Range(0, QueryTile.Of(Start, Tokens).Length * selectors).Select(r => plan.Row(r).ToArray()).ToArray();
        return (plan, rows, output);
    }

    public float[] RunReuse(KeyPlan plan, int[] map) => Run((b, args, q, cache, o) => b.SparseAttention(args, plan, map, q, cache, o));

    public float[] RunDense() => Run((b, args, q, cache, o) => b.Attention(args, q, cache, o));

    public float[] RunOracle(double percent) => Run((b, args, q, cache, o) => b.OracleTopKAttention(args, percent, q, cache, o));

    /// <summary>The pooled tile scores, <c>[tiles · pools, Start + Tokens]</c> row-major.</summary>
    public float[] RunPooled(ScorePooling pooling, int pools) =>
        Run((b, args, q, cache, o) => b.PooledTileScores(args, pooling, pools, q, cache, o), QueryTile.Of(Start, Tokens).Length * pools, Start + Tokens);

    /// <summary>Every query head's probabilities, <c>[Tokens · Heads, Start + Tokens]</c> row-major.</summary>
    public float[] RunProbabilities() =>
        Run((b, args, q, cache, o) => b.AttentionProbabilities(args, q, cache, o), Tokens * Heads, Start + Tokens);

    private float[] Run(Action<CpuBackend, AttentionArgs, CpuTensor, KvCache, CpuTensor> attend) => Run(attend, Tokens, Heads * HeadDim);

    private float[] Run(Action<CpuBackend, AttentionArgs, CpuTensor, KvCache, CpuTensor> attend, int outputRows, int outputCols)
    {
        using var backend = new CpuBackend();
        int total = Start + Tokens, d = HeadDim;
        using var cache = backend.AllocateKvCache(new KvCacheShape(1, KvHeads, d, total));
        var k = (CpuTensor)backend.Allocate(total, KvHeads * d);
        var v = (CpuTensor)backend.Allocate(total, KvHeads * d);
        for (int j = 0; j < total; j++)
        {
            K[j].Select(x => (float)x).ToArray().CopyTo(k.Row(j));
            V[j].Select(x => (float)x).ToArray().CopyTo(v.Row(j));
        }
        backend.AppendKv(cache, 0, 0, k, v);
        var q = (CpuTensor)backend.Allocate(Tokens, Heads * d);
        for (int t = 0; t < Tokens; t++)
        {
            Q[t].Select(x => (float)x).ToArray().CopyTo(q.Row(t));
        }
        var output = (CpuTensor)backend.Allocate(outputRows, outputCols);
        attend(backend, new AttentionArgs(0, Tokens, Start, Heads, KvHeads, d, 1f / MathF.Sqrt(d)), q, cache, output);
        return output.Span.ToArray();
    }
}
