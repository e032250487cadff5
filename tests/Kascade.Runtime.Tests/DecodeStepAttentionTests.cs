using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Attention;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>
/// <see cref="DecodeStepAttention"/>, the unit <c>bench methods</c> times, on the CPU: a cycle's last step attends at the
/// last cached position over every key, every method runs its cycles, and the refusals.
/// </summary>
public class DecodeStepAttentionTests
{
    private const int Length = 300;

    private static ModelConfig Config()
    {
        using var dir = new TempDirectory();
        RandomModel.Write(dir.Path, new RandomModelShape(HeadDim: 16, Heads: 4, KvHeads: 2, Layers: 3));
        return ShapePresets.Load(dir.Path);
    }

    /// <summary>A cache of every layer filled at <c>[0, Length)</c> with random keys and values, a random query and the output.</summary>
    private sealed record Inputs(KvCache Cache, DeviceTensor Q, DeviceTensor Output) : IDisposable
    {
        public static Inputs Random(CpuBackend b, ModelConfig c)
        {
            var rng = new Random(5);
            float[] Values(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
            var cache = b.AllocateKvCache(new KvCacheShape(c.Layers, c.KvHeads, c.HeadDim, Length));
            for (int layer = 0; layer < c.Layers; layer++)
            {
                using var k = b.Upload(Values(Length * c.KvHeads * c.HeadDim), Length, c.KvHeads * c.HeadDim);
                using var v = b.Upload(Values(Length * c.KvHeads * c.HeadDim), Length, c.KvHeads * c.HeadDim);
                b.AppendKv(cache, layer, 0, k, v);
            }
            return new(cache, b.Upload(Values(c.Heads * c.HeadDim), 1, c.Heads * c.HeadDim), b.Allocate(1, c.Heads * c.HeadDim));
        }

        public void Dispose()
        {
            Cache.Dispose();
            Q.Dispose();
            Output.Dispose();
        }
    }

    /// <summary>The last layer's output after one cycle of <paramref name="policy"/>.</summary>
    private static float[] LastLayerOutput(CpuBackend b, ModelConfig c, AttentionPolicy policy, Inputs inputs)
    {
        using var step = new DecodeStepAttention(b, policy, c, inputs.Cache, Length, inputs.Q, inputs.Output);
        step.RunCycle();
        var result = new float[c.Heads * c.HeadDim];
        b.Read(inputs.Output, result);
        return result;
    }

    [Fact]
    public void A_dense_step_and_kascade_keeping_every_key_equal_the_attention_op_over_every_cached_key()
    {
        using var b = new CpuBackend(2);
        var c = Config();
        using var inputs = Inputs.Random(b, c);
        using var direct = b.Allocate(1, c.Heads * c.HeadDim);
        b.Attention(new AttentionArgs(c.Layers - 1, 1, Length - 1, c.Heads, c.KvHeads, c.HeadDim, c.AttentionScale), inputs.Q, inputs.Cache, direct);
        var expected = new float[c.Heads * c.HeadDim];
        b.Read(direct, expected);
        Compare.Close(expected, LastLayerOutput(b, c, AttentionPolicy.Dense, inputs), 0, 0, "dense step");
        // Every layer an anchor at 100%: each selects every key, so its sparse attention is dense attention.
        var all = new AttentionPolicy(AttentionMethod.Kascade, KascadeSchedule.Spread(c, c.Layers, 100), 100);
        Compare.Close(expected, LastLayerOutput(b, c, all, inputs), Tolerances.KernelAbsolute, Tolerances.KernelRelative, "kascade at 100%");
        // With a refresh of 4 the cycle's last three steps extend the kept plans: the last one, at Length − 1, still
        // attends over every cached key.
        Compare.Close(expected, LastLayerOutput(b, c, all with { AnchorRefresh = 4 }, inputs), Tolerances.KernelAbsolute, Tolerances.KernelRelative, "kascade at 100%, refresh 4");
    }

    public static TheoryData<string> Methods() => [.. AttentionMethods.All.Select(m => m.Name)];

    [Theory]
    [MemberData(nameof(Methods))]
    public void Every_method_runs_its_cycles(string name)
    {
        using var b = new CpuBackend(2);
        var c = Config();
        var info = AttentionMethods.Find(name);
        var policy = new AttentionPolicy(info.Method, info.NeedsSchedule ? KascadeSchedule.Spread(c, 2, 10) : null, 10) { AnchorRefresh = info.NeedsSchedule ? 3 : 1 };
        using var inputs = Inputs.Random(b, c);
        using var step = new DecodeStepAttention(b, policy, c, inputs.Cache, Length, inputs.Q, inputs.Output);
        Assert.Equal(info.NeedsSchedule ? 3 : 1, step.StepsPerCycle);
        step.RunCycle();
        var first = new float[c.Heads * c.HeadDim];
        b.Read(inputs.Output, first);
        Assert.All(first, v => Assert.True(float.IsFinite(v)));
        Assert.Contains(first, v => v != 0);
        // A cycle starts where the last one did: the same steps, the same output.
        step.RunCycle();
        var second = new float[c.Heads * c.HeadDim];
        b.Read(inputs.Output, second);
        Assert.Equal(first, second);
    }

    [Fact]
    public void A_cycle_longer_than_the_cache_and_a_cache_of_another_shape_are_refused()
    {
        using var b = new CpuBackend(2);
        var c = Config();
        using var inputs = Inputs.Random(b, c);
        var refresh = new AttentionPolicy(AttentionMethod.Kascade, KascadeSchedule.Spread(c, 2, 10), 10) { AnchorRefresh = 4 };
        Assert.Throws<ArgumentOutOfRangeException>(() => new DecodeStepAttention(b, refresh, c, inputs.Cache, 3, inputs.Q, inputs.Output));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DecodeStepAttention(b, AttentionPolicy.Dense, c, inputs.Cache, Length + 1, inputs.Q, inputs.Output));
        using var other = b.AllocateKvCache(new KvCacheShape(c.Layers - 1, c.KvHeads, c.HeadDim, Length));
        Assert.Throws<ArgumentException>(() => new DecodeStepAttention(b, AttentionPolicy.Dense, c, other, Length, inputs.Q, inputs.Output));
    }

    /// <summary>
    /// A batch's step (every layer attends over the batch's one cache, <see cref="IBatchedDecode"/>) gives sequence b
    /// what a single-sequence step gives over a cache whose every layer holds sequence b: for dense, for Kascade
    /// selecting every step and keeping its selection for 4 (the kept plans extended for every sequence), and for every
    /// baseline, selecting from layer 1 on (a batch's selector state is per sequence and shared by the layers, which
    /// here read the same keys with the same query, so it equals the single step's state per layer).
    /// </summary>
    [Theory]
    [InlineData("dense", 1)]
    [InlineData("kascade", 1)]
    [InlineData("kascade", 4)]
    [InlineData("kascade-pooled", 1)]
    [InlineData("quest", 1)]
    [InlineData("omnikv", 1)]
    [InlineData("lessismore", 1)]
    [InlineData("sparcas", 1)]
    [InlineData("streamingllm", 1)]
    public void A_batched_step_gives_each_sequence_its_own_step(string method, int refresh)
    {
        const int batch = 4;                     // not the model's 3 layers: a batch's cache holds a layer per sequence
        using var b = new CpuBackend(2);
        var c = Config();
        var info = AttentionMethods.Find(method);
        var fromLayer1 = new BaselineOptions { QuestDenseLayers = 1, SparCasDenseLayers = 1, OmniKvFilterLayers = [1], LessIsMoreSelectionLayers = [1], MinWindow = 16 };
        var policy = info.NeedsSchedule ? new AttentionPolicy(info.Method, KascadeSchedule.Spread(c, 2, 10), 10) { AnchorRefresh = refresh }
            : info.Baseline ? new AttentionPolicy(info.Method, null, 10) { Baselines = fromLayer1 }
            : AttentionPolicy.Dense;
        var rng = new Random(9);
        int kvWidth = c.KvHeads * c.HeadDim, width = c.Heads * c.HeadDim;
        float[] Values(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        var keys = Enumerable.Range(0, batch).Select(_ => Values(Length * kvWidth)).ToArray();
        var values = Enumerable.Range(0, batch).Select(_ => Values(Length * kvWidth)).ToArray();
        var queries = Values(batch * width).Select(x => 4 * x).ToArray();
        KvCache Cache(int layers, Func<int, int> sequenceOfLayer)
        {
            var cache = b.AllocateKvCache(new KvCacheShape(layers, c.KvHeads, c.HeadDim, Length));
            for (int layer = 0; layer < layers; layer++)
            {
                b.AppendKv(cache, layer, 0, b.Upload(keys[sequenceOfLayer(layer)], Length, kvWidth), b.Upload(values[sequenceOfLayer(layer)], Length, kvWidth));
            }
            return cache;
        }

        using var batchCache = Cache(batch, s => s);
        using var output = b.Allocate(batch, width);
        using (var step = new DecodeStepAttention(b, policy, c, batchCache, Length, b.Upload(queries, batch, width), output, batch))
        {
            step.RunCycle();
        }
        var actual = new float[batch * width];
        b.Read(output, actual);
        for (int s = 0; s < batch; s++)
        {
            using var single = Cache(c.Layers, _ => s);
            using var one = b.Allocate(1, width);
            using (var step = new DecodeStepAttention(b, policy, c, single, Length, b.Upload(queries.AsSpan(s * width, width), 1, width), one))
            {
                step.RunCycle();
            }
            var expected = new float[width];
            b.Read(one, expected);
            Compare.Close(expected, actual.AsSpan(s * width, width).ToArray(), 0, 0, $"{method} refresh {refresh}, sequence {s}");
        }
        Assert.NotEqual(actual.AsSpan(0, width).ToArray(), actual.AsSpan(width, width).ToArray());
    }

    [Fact]
    public void A_batch_of_a_method_without_batched_ops_is_refused()
    {
        using var b = new CpuBackend(2);
        var c = Config();
        using var cache = b.AllocateKvCache(new KvCacheShape(2, c.KvHeads, c.HeadDim, Length));
        using var q = b.Allocate(2, c.Heads * c.HeadDim);
        var oracle = new AttentionPolicy(AttentionMethod.OracleTopK, null, 10);
        Assert.Contains("no batched decode", Assert.Throws<KascadeException>(() => new DecodeStepAttention(b, oracle, c, cache, Length, q, q, 2)).Message);
        // A batch's cache holds a layer per sequence.
        using var wrong = b.AllocateKvCache(new KvCacheShape(3, c.KvHeads, c.HeadDim, Length));
        Assert.Throws<ArgumentException>(() => new DecodeStepAttention(b, AttentionPolicy.Dense, c, wrong, Length, q, q, 2));
        // A row of queries and output per sequence.
        using var one = b.Allocate(1, c.Heads * c.HeadDim);
        Assert.Contains("a row per sequence", Assert.Throws<ArgumentException>(() => new DecodeStepAttention(b, AttentionPolicy.Dense, c, cache, Length, one, one, 2)).Message);
    }
}
