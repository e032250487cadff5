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
}
