using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Attention;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>The baselines of DESIGN §4: each selection against a brute-force reference, the layer roles, and whole-model runs.</summary>
public class BaselineTests
{
    private static readonly BaselineOptions O = BaselineOptions.Default;

    private static readonly KeySelector.Window Window = (KeySelector.Window)BaselinePolicy.SelectorOf(new AttentionPolicy(AttentionMethod.StreamingLlm));

    private static readonly KeySelector.UnionTopK Union = (KeySelector.UnionTopK)BaselinePolicy.SelectorOf(new AttentionPolicy(AttentionMethod.LessIsMore));

    private static float[] RandomRows(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

    /// <summary>Brute-force Top-k: descending value, ties by ascending position, returned ascending.</summary>
    private static int[] NaiveTopK(IReadOnlyList<double> values, int k) =>
        values.Select((v, i) => (v, i)).OrderByDescending(x => x.v).ThenBy(x => x.i).Take(k).Select(x => x.i).Order().ToArray();

    [Fact]
    public void Streaming_window_is_sinks_plus_recent_tokens()
    {
        Assert.Equal(Enumerable.Range(0, 100), BaselineSelection.StreamingWindow(100, Window));
        // 30% of 1000 = 300: 4 sinks + the 296 most recent.
        Assert.Equal(Enumerable.Range(0, 4).Concat(Enumerable.Range(704, 296)), BaselineSelection.StreamingWindow(1000, Window));
        // Below 427 keys the 128-token floor applies.
        Assert.Equal(Enumerable.Range(0, 4).Concat(Enumerable.Range(300 - 124, 124)), BaselineSelection.StreamingWindow(300, Window));
    }

    [Fact]
    public void Quest_keeps_the_pages_with_the_best_bound_and_the_bound_holds()
    {
        var rng = new Random(11);
        const int n = 203, d = 8, page = 16, budget = 64;
        var keys = RandomRows(rng, n * d);
        var query = RandomRows(rng, d);
        var bounds = BaselineSelection.PageBounds(keys, n, d, page);
        int pages = (n + page - 1) / page;
        var pageScore = new double[pages];
        for (int p = 0; p < pages; p++)
        {
            var rows = Enumerable.Range(p * page, Math.Min(page, n - p * page)).ToArray();
            for (int e = 0; e < d; e++)
            {
                double lo = rows.Min(j => keys[j * d + e]), hi = rows.Max(j => keys[j * d + e]);
                pageScore[p] += Math.Max(query[e] * lo, query[e] * hi);
            }
            foreach (int j in rows)
            {
                double dot = Enumerable.Range(0, d).Sum(e => (double)query[e] * keys[j * d + e]);
                Assert.True(dot <= pageScore[p] + 1e-5, $"page {p} bounds key {j}");
            }
        }
        var expected = NaiveTopK(pageScore, budget / page).SelectMany(p => Enumerable.Range(p * page, Math.Min(page, n - p * page))).ToArray();
        Assert.Equal(expected, BaselineSelection.QuestPages(query, bounds, n, page, budget));
    }

    [Fact]
    public void OmniKv_pools_probabilities_with_a_max_over_heads()
    {
        var rng = new Random(5);
        const int n = 300, heads = 4, budget = 40;
        var probabilities = Enumerable.Range(0, heads).Select(_ => RandomRows(rng, n)).ToArray();
        var pooled = Enumerable.Range(0, n).Select(j => (double)probabilities.Max(row => row[j])).ToArray();
        Assert.Equal(NaiveTopK(pooled, budget), BaselineSelection.MaxPooledTopK(probabilities, n, budget));
    }

    [Fact]
    public void LessIsMore_is_the_union_of_head_top_k_sinks_and_recent_tokens()
    {
        var rng = new Random(9);
        const int n = 500, heads = 3, budget = 128;
        var scores = Enumerable.Range(0, heads).Select(_ => RandomRows(rng, n)).ToArray();
        var expected = new SortedSet<int>(Enumerable.Range(0, 4).Concat(Enumerable.Range(n - 32, 32)));
        foreach (var row in scores)
        {
            expected.UnionWith(NaiveTopK(row.Select(x => (double)x).ToArray(), 96));
        }
        Assert.Equal(expected, BaselineSelection.LessIsMoreSet(scores, n, budget, Union));
    }

    [Fact]
    public void SparCas_ranks_keys_by_partial_scores_on_the_largest_query_dimensions()
    {
        var rng = new Random(13);
        const int n = 250, d = 16, budget = 30;
        var keys = RandomRows(rng, n * d);
        var query = RandomRows(rng, d);
        var dims = BaselineSelection.LargestDimensions(query, 4);
        Assert.Equal(NaiveTopK(query.Select(x => (double)Math.Abs(x)).ToArray(), 4), dims);
        var partial = Enumerable.Range(0, n).Select(j => dims.Sum(e => (double)query[e] * keys[j * d + e])).ToArray();
        Assert.Equal(NaiveTopK(partial, budget), BaselineSelection.PartialScoreTopK(query, dims, keys, n, budget));
    }

    [Fact]
    public void Layer_roles_follow_the_defaults()
    {
        BaselineLayerMode Mode(AttentionMethod m, int layer) => BaselinePolicy.ModeOf(m, O, layer);
        var omni = Enumerable.Range(0, 24).Select(l => Mode(AttentionMethod.OmniKv, l)).ToArray();
        Assert.Equal([0, 1, 3, 9, 19], omni.Select((m, l) => (m, l)).Where(x => x.m == BaselineLayerMode.Dense).Select(x => x.l));
        Assert.Equal([2, 8, 18], omni.Select((m, l) => (m, l)).Where(x => x.m == BaselineLayerMode.DenseAndSelect).Select(x => x.l));
        var less = Enumerable.Range(0, 24).Select(l => Mode(AttentionMethod.LessIsMore, l)).ToArray();
        Assert.Equal([0, 1], less.Select((m, l) => (m, l)).Where(x => x.m == BaselineLayerMode.Dense).Select(x => x.l));
        Assert.Equal([2, 13], less.Select((m, l) => (m, l)).Where(x => x.m == BaselineLayerMode.DenseAndSelect).Select(x => x.l));
        Assert.Equal(BaselineLayerMode.Dense, Mode(AttentionMethod.Quest, 1));
        Assert.Equal(BaselineLayerMode.Select, Mode(AttentionMethod.Quest, 2));
        Assert.Equal(BaselineLayerMode.Dense, Mode(AttentionMethod.SparCas, 2));
        Assert.Equal(BaselineLayerMode.Select, Mode(AttentionMethod.SparCas, 3));
        Assert.Equal(BaselineLayerMode.Select, Mode(AttentionMethod.StreamingLlm, 0));
        Assert.Equal(BaselineLayerMode.Reuse, Mode(AttentionMethod.OmniKv, 4));
        Assert.Equal(BaselineLayerMode.Reuse, Mode(AttentionMethod.LessIsMore, 3));
    }

    private static readonly InstrumentRuns Runs = new();

    private static float[] Run(int[] ids, AttentionPolicy policy, int decodeSteps) => Runs.Run(ids, policy, 256, decodeSteps);

    private static int[] Prompt(int tokens) => Runs.Prompt(tokens);

    public static TheoryData<AttentionMethod> Baselines =>
        [AttentionMethod.StreamingLlm, AttentionMethod.Quest, AttentionMethod.OmniKv, AttentionMethod.LessIsMore, AttentionMethod.SparCas];

    [Theory]
    [MemberData(nameof(Baselines))]
    public void With_fewer_keys_than_the_budget_every_baseline_is_dense(AttentionMethod method)
    {
        var ids = Prompt(100);
        Compare.Close(Run(ids, AttentionPolicy.Dense, 3), Run(ids, new AttentionPolicy(method), 3), Tolerances.InstrumentFp32Logits, 0, method.ToString());
    }

    [Theory]
    [MemberData(nameof(Baselines))]
    public void Decode_only_baselines_prefill_densely_and_decode_sparsely(AttentionMethod method)
    {
        var ids = Prompt(1500);
        int vocab = Runs.Directory.Value.Config.VocabSize;
        var dense = Run(ids, AttentionPolicy.Dense, 2);
        var sparse = Run(ids, new AttentionPolicy(method, null, 5), 2);
        double prefillDiff = Compare.MaxAbsDiff(dense.AsSpan(0, vocab), sparse.AsSpan(0, vocab));
        double decodeDiff = Compare.MaxAbsDiff(dense.AsSpan(vocab), sparse.AsSpan(vocab));
        if (method == AttentionMethod.StreamingLlm)
        {
            Assert.True(prefillDiff > 1e-3, "streamingllm windows prefill too");
        }
        else
        {
            Assert.True(prefillDiff <= Tolerances.InstrumentFp32Logits, $"{method} prefill differs from dense by {prefillDiff}");
        }
        Assert.True(decodeDiff > 1e-3, $"{method} decode should attend to a subset at 5% of 1500 keys");
    }

    [Fact]
    public void Baseline_settings_are_read_by_name_and_described_in_full()
    {
        var o = BaselineOptions.Default.With("streaming-window-percent=20").With(" omnikv-filter-layers = 9,3,3 ").With("sparcas-refresh-steps=8").With("sinks=0");
        Assert.Equal(20, o.StreamingWindowPercent);
        Assert.Equal([3, 9], o.OmniKvFilterLayers);
        Assert.Equal(8, o.SparCasRefreshSteps);
        Assert.Equal(0, o.SinkTokens);
        Assert.Equal(BaselineOptions.Default.QuestPageSize, o.QuestPageSize);
        Assert.Contains("streaming-window-percent=20", o.Describe());
        Assert.Contains("omnikv-filter-layers=3,9", o.Describe());
        Assert.Equal(BaselineOptions.SettingNames.Count(), o.Describe().Split(' ').Length);
    }

    [Theory]
    [InlineData("window=20", "unknown baseline setting 'window'")]
    [InlineData("sinks", "is not NAME=VALUE")]
    [InlineData("quest-page=0", "integer ≥ 1")]
    [InlineData("streaming-window-percent=150", "in (0, 100]")]
    [InlineData("lessismore-recent-fraction=1.5", "in (0, 1]")]
    [InlineData("omnikv-filter-layers=", "at least one layer")]
    [InlineData("lessismore-selection-layers=2,x", "'x' is not a layer index")]
    public void Bad_baseline_settings_are_named(string assignment, string message)
    {
        Assert.Contains(message, Assert.Throws<KascadeException>(() => BaselineOptions.Default.With(assignment)).Message);
    }
}
