using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Diagnostics;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary>
/// <see cref="IBatchedDecode"/> on the CPU, the reference the GPU's batched kernels are held to: each sequence's output
/// and plan unit are what the single-sequence op gives that sequence alone, and bad batches are refused.
/// </summary>
public class BatchedDecodeTests
{
    private const int KvHeads = 2, Group = 4, Heads = KvHeads * Group, HeadDim = 32, Keys = 1500, Batch = 3;

    private static AttentionArgs Args => new(0, Batch, Keys - 1, Heads, KvHeads, HeadDim, 1f / MathF.Sqrt(HeadDim));

    /// <summary>Sequence b's keys and values (<c>[Keys, KvHeads·HeadDim]</c>), different for each b, and a batch of queries.</summary>
    private static (float[][] K, float[][] V, float[] Q) Inputs()
    {
        var rng = new Random(7);
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        return (Enumerable.Range(0, Batch).Select(_ => Values(Keys * KvHeads * HeadDim)).ToArray(),
                Enumerable.Range(0, Batch).Select(_ => Values(Keys * KvHeads * HeadDim)).ToArray(),
                Values(Batch * Heads * HeadDim).Select(x => 3 * x).ToArray());
    }

    private static KvCache Cache(CpuBackend backend, float[][] k, float[][] v, int layers)
    {
        var cache = backend.AllocateKvCache(new KvCacheShape(layers, KvHeads, HeadDim, Keys));
        for (int s = 0; s < layers; s++)
        {
            backend.AppendKv(cache, s, 0, backend.Upload(k[s], Keys, KvHeads * HeadDim), backend.Upload(v[s], Keys, KvHeads * HeadDim));
        }
        return cache;
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Each_sequence_gets_its_own_selection_and_output(bool layerZero, bool poolAllHeads)
    {
        using var backend = new CpuBackend();
        var (k, v, q) = Inputs();
        var selection = new SelectionArgs(10, ScorePooling.PostSoftmax, poolAllHeads, DenseOutput: layerZero);
        int selectors = poolAllHeads ? 1 : KvHeads, capacity = TopKBudget.For(Keys, 10), width = Heads * HeadDim;
        int[] map = poolAllHeads ? [0, 0] : [1, 0];
        using var cache = Cache(backend, k, v, Batch);
        using var plan = backend.AllocatePlan(Batch, selectors, capacity);
        var anchor = (CpuTensor)backend.Allocate(Batch, width);
        var reuse = (CpuTensor)backend.Allocate(Batch, width);
        var queries = backend.Upload(q, Batch, width);
        backend.BatchedAnchorAttention(Args, selection, queries, cache, plan, anchor);
        backend.BatchedSparseAttention(Args, plan, map, queries, cache, reuse);
        var counts = new int[Batch * selectors];
        var indices = new int[Batch * selectors * capacity];
        backend.ReadPlan(plan, counts, indices);

        for (int b = 0; b < Batch; b++)
        {
            using var single = Cache(backend, [k[b]], [v[b]], 1);
            using var singlePlan = backend.AllocatePlan(1, selectors, capacity);
            var args = Args with { Tokens = 1 };
            var q1 = backend.Upload(q.AsSpan(b * width, width), 1, width);
            var expectedAnchor = (CpuTensor)backend.Allocate(1, width);
            var expectedReuse = (CpuTensor)backend.Allocate(1, width);
            backend.AnchorAttention(args, selection, q1, single, singlePlan, expectedAnchor);
            backend.SparseAttention(args, singlePlan, map, q1, single, expectedReuse);
            Assert.Equal(expectedAnchor.Row(0).ToArray(), anchor.Row(b).ToArray());
            Assert.Equal(expectedReuse.Row(0).ToArray(), reuse.Row(b).ToArray());
            var singleCounts = new int[selectors];
            var singleIndices = new int[selectors * capacity];
            backend.ReadPlan(singlePlan, singleCounts, singleIndices);
            Assert.Equal(singleCounts, counts.AsSpan(b * selectors, selectors).ToArray());
            Assert.Equal(singleIndices, indices.AsSpan(b * selectors * capacity, selectors * capacity).ToArray());
        }
        // The sequences differ, so a batch that read one sequence's keys for all would fail above; check they do.
        Assert.NotEqual(anchor.Row(0).ToArray(), anchor.Row(1).ToArray());
    }

    public static TheoryData<string> Selectors => ["omnikv", "lessismore", "quest", "sparcas", "streamingllm"];

    /// <summary>
    /// A baseline's batched selection (state built per sequence: an update over the keys before the step, then the
    /// step's) and the sparse attention over it give sequence b the plan and output the single-sequence ops give it alone.
    /// </summary>
    [Theory]
    [MemberData(nameof(Selectors))]
    public void Each_sequence_gets_its_own_baseline_selection(string method)
    {
        using var backend = new CpuBackend();
        var (k, v, q) = Inputs();
        int width = Heads * HeadDim;
        var selector = KeySelectorOf(method);
        int selectors = selector.Selectors(Heads);
        int[] map = selectors == 1 ? new int[KvHeads] : [.. Enumerable.Range(0, Heads)];
        using var cache = Cache(backend, k, v, Batch);
        using var state = backend.AllocateSelectorState(selector, new KvCacheShape(Batch, KvHeads, HeadDim, Keys), Heads);
        using var plan = selector.AllocatePlan(backend, Heads, Keys, 1, Batch);
        var output = (CpuTensor)backend.Allocate(Batch, width);
        var queries = backend.Upload(q, Batch, width);
        for (int b = 0; b < Batch; b++)
        {
            backend.UpdateSelectorState(Args with { Layer = b, Tokens = Keys - 1, StartPosition = 0 }, cache, state);
        }
        backend.BatchedUpdateSelectorState(Args, cache, state);
        backend.BatchedSelectKeys(Args, queries, cache, state, plan);
        backend.BatchedSparseAttention(Args, plan, map, queries, cache, output);
        var counts = new int[plan.Rows];
        var indices = new int[plan.Rows * plan.Capacity];
        backend.ReadPlan(plan, counts, indices);

        for (int b = 0; b < Batch; b++)
        {
            using var single = Cache(backend, [k[b]], [v[b]], 1);
            using var singleState = backend.AllocateSelectorState(selector, new KvCacheShape(1, KvHeads, HeadDim, Keys), Heads);
            using var singlePlan = selector.AllocatePlan(backend, Heads, Keys, 1);
            var args = Args with { Tokens = 1 };
            var q1 = backend.Upload(q.AsSpan(b * width, width), 1, width);
            var expected = (CpuTensor)backend.Allocate(1, width);
            backend.UpdateSelectorState(args with { Tokens = Keys - 1, StartPosition = 0 }, single, singleState);
            backend.UpdateSelectorState(args, single, singleState);
            backend.SelectKeys(args, q1, single, singleState, singlePlan);
            backend.SparseAttention(args, singlePlan, map, q1, single, expected);
            Assert.Equal(expected.Row(0).ToArray(), output.Row(b).ToArray());
            var singleCounts = new int[selectors];
            var singleIndices = new int[selectors * plan.Capacity];
            backend.ReadPlan(singlePlan, singleCounts, singleIndices);
            Assert.Equal(singleCounts, counts.AsSpan(b * selectors, selectors).ToArray());
            for (int row = 0; row < selectors; row++)
            {
                Assert.Equal(singleIndices.AsSpan(row * plan.Capacity, singleCounts[row]).ToArray(), indices.AsSpan((b * selectors + row) * plan.Capacity, singleCounts[row]).ToArray());
            }
        }
        Assert.NotEqual(output.Row(0).ToArray(), output.Row(1).ToArray());
    }

    private static KeySelector KeySelectorOf(string method) =>
        Kascade.Runtime.Attention.BaselinePolicy.SelectorOf(new AttentionPolicy(AttentionMethods.Find(method).Method, null, 10) { Baselines = new BaselineOptions { MinWindow = 16 } });

    [Fact]
    public void Dense_batched_decode_is_each_sequences_decode()
    {
        using var backend = new CpuBackend();
        var (k, v, q) = Inputs();
        int width = Heads * HeadDim;
        using var cache = Cache(backend, k, v, Batch);
        var output = (CpuTensor)backend.Allocate(Batch, width);
        backend.BatchedDecodeAttention(Args, backend.Upload(q, Batch, width), cache, output);
        for (int b = 0; b < Batch; b++)
        {
            using var single = Cache(backend, [k[b]], [v[b]], 1);
            var expected = (CpuTensor)backend.Allocate(1, width);
            backend.Attention(Args with { Tokens = 1 }, backend.Upload(q.AsSpan(b * width, width), 1, width), single, expected);
            Assert.Equal(expected.Row(0).ToArray(), output.Row(b).ToArray());
        }
    }

    [Fact]
    public void A_batch_the_cache_or_plan_cannot_hold_is_refused()
    {
        using var backend = new CpuBackend();
        var (k, v, q) = Inputs();
        int width = Heads * HeadDim;
        using var cache = Cache(backend, k, v, 2);
        var queries = backend.Upload(q, Batch, width);
        var output = backend.Allocate(Batch, width);
        var selection = new SelectionArgs(10, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false);
        Assert.Contains("cache of at least 3 sequences", Assert.Throws<ArgumentException>(() => backend.BatchedDecodeAttention(Args, queries, cache, output)).Message);
        Assert.Contains("queries and an output of [3, 256]", Assert.Throws<ArgumentException>(() => backend.BatchedDecodeAttention(Args, queries.Take(2), cache, output)).Message);
        using var full = Cache(backend, k, v, Batch);
        using var small = backend.AllocatePlan(2, KvHeads, 256);
        Assert.Contains("plan of at least 3 units", Assert.Throws<ArgumentException>(() => backend.BatchedAnchorAttention(Args, selection, queries, full, small, output)).Message);
        Assert.Contains("does not fit a cache", Assert.Throws<ArgumentException>(() => backend.BatchedDecodeAttention(Args with { StartPosition = Keys }, queries, full, output)).Message);
        // A reuse layer must read the plan of its own step.
        using var plan = backend.AllocatePlan(Batch, KvHeads, 256);
        backend.BatchedAnchorAttention(Args, selection, queries, full, plan, output);
        Assert.Throws<InvalidOperationException>(() => backend.BatchedSparseAttention(Args with { StartPosition = Keys - 2 }, plan, [0, 1], queries, full, output));
        // A head map names the plan's selectors, a KV head's or a query head's.
        Assert.Contains("one of the plan's 2 selectors", Assert.Throws<ArgumentException>(() => backend.BatchedSparseAttention(Args, plan, [0, 2], queries, full, output)).Message);
        // A selector's state holds a layer per sequence.
        var quest = new KeySelector.PageTopK(10, 16);
        using var state = backend.AllocateSelectorState(quest, new KvCacheShape(2, KvHeads, HeadDim, Keys), Heads);
        using var questPlan = quest.AllocatePlan(backend, Heads, Keys, 1, Batch);
        Assert.Contains("selector state of a layer per sequence", Assert.Throws<ArgumentException>(() => backend.BatchedSelectKeys(Args, queries, full, state, questPlan)).Message);
        using var fullState = backend.AllocateSelectorState(quest, new KvCacheShape(Batch, KvHeads, HeadDim, Keys), Heads);
        Assert.Contains("cannot hold", Assert.Throws<ArgumentException>(() => backend.BatchedSelectKeys(Args, queries, full, fullState, plan)).Message);
    }

    /// <summary>
    /// The GPU's batched parity grid run with the CPU as both sides: every case runs (none refused, the Kascade cases
    /// included) and agrees with itself, so on the GPU a failure is the kernels', not the harness's.
    /// </summary>
    /// <summary>
    /// A batch's plan read back and written into another plan with the step's arguments (<see cref="IBackend.WritePlan"/>,
    /// as the parity checks hand the reference a candidate's plan) serves the batched sparse attention, which gives the
    /// same output over it.
    /// </summary>
    [Fact]
    public void A_batch_plan_written_back_serves_the_step()
    {
        using var backend = new CpuBackend();
        var (k, v, q) = Inputs();
        int capacity = TopKBudget.For(Keys, 10), width = Heads * HeadDim;
        int[] map = [1, 0];
        using var cache = Cache(backend, k, v, Batch);
        using var plan = backend.AllocatePlan(Batch, KvHeads, capacity);
        using var copy = backend.AllocatePlan(Batch, KvHeads, capacity);
        var queries = backend.Upload(q, Batch, width);
        var anchor = (CpuTensor)backend.Allocate(Batch, width);
        var expected = (CpuTensor)backend.Allocate(Batch, width);
        var actual = (CpuTensor)backend.Allocate(Batch, width);
        backend.BatchedAnchorAttention(Args, new SelectionArgs(10, ScorePooling.PostSoftmax, false, false), queries, cache, plan, anchor);
        backend.BatchedSparseAttention(Args, plan, map, queries, cache, expected);
        var counts = new int[plan.Rows];
        var indices = new int[plan.Rows * capacity];
        backend.ReadPlan(plan, counts, indices);

        backend.WritePlan(Args with { Tokens = 1 }, copy, counts, indices);
        backend.BatchedSparseAttention(Args, copy, map, queries, cache, actual);

        Assert.Equal(expected.Span.ToArray(), actual.Span.ToArray());
        // Written with the batch's rows as queries, it serves no step (and could list positions past the step's keys).
        Assert.Throws<InvalidOperationException>(() =>
        {
            backend.WritePlan(Args, copy, counts, indices);
            backend.BatchedSparseAttention(Args, copy, map, queries, cache, actual);
        });
    }

    [Fact]
    public void The_batched_parity_grid_runs_on_the_reference()
    {
        using var a = new CpuBackend(2);
        using var b = new CpuBackend(2);
        var results = BackendParity.RunBatched(a, b);
        Assert.All(results, r => Assert.True(r.Passed && r.NotRun is null, r.ToString()));
        Assert.Equal(9, results.Count(r => r.Op == "batched decode"));
        // Each shape plain and as layer 0; the 5 odd batches all heads under the reference budget, the 4 even ones layer 0 with bf16 scores.
        Assert.Equal(9 * 2 + 5 + 4, results.Count(r => r.Op == "batched anchor plan"));
        Assert.Equal(9 * 5, results.Count(r => r.Op == "batched baseline plan"));
    }

    [Fact]
    public void The_batched_step_check_runs_every_policy_on_the_reference()
    {
        using var a = new CpuBackend(2);
        using var b = new CpuBackend(2);
        var results = BatchedStepCheck.Run(a, b);
        Assert.Equal(3 + 5, results.Count);
        Assert.All(results, r => Assert.True(r.Passed && r.NotRun is null, r.ToString()));
    }
}
