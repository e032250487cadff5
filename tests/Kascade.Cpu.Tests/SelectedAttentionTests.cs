using Kascade.Core;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary><see cref="CpuBackend.SelectedAttention"/> (the gathered attention the baselines run on) against a naive double reference.</summary>
public class SelectedAttentionTests
{
    private const int KvHeads = 2, Heads = 4, D = 16, Start = 40, Tokens = 3;

    private static (CpuBackend B, KvCache Cache, DeviceTensor Q, double[][] Keys, double[][] Values, double[][] Queries) Setup()
    {
        var rng = new Random(7);
        int total = Start + Tokens;
        var b = new CpuBackend();
        double[][] Rows(int n, int width) => Enumerable.Range(0, n).Select(_ => Enumerable.Range(0, width).Select(_ => rng.NextDouble() * 2 - 1).ToArray()).ToArray();
        var keys = Rows(total, KvHeads * D);
        var values = Rows(total, KvHeads * D);
        var queries = Rows(Tokens, Heads * D);
        float[] Flat(double[][] rows) => rows.SelectMany(r => r.Select(x => (float)x)).ToArray();
        var cache = b.AllocateKvCache(new KvCacheShape(1, KvHeads, D, total));
        b.AppendKv(cache, 0, 0, b.Upload(Flat(keys), total, KvHeads * D), b.Upload(Flat(values), total, KvHeads * D));
        // Keys and values went through fp32; compare against the same rounded values.
        keys = keys.Select(r => r.Select(x => (double)(float)x).ToArray()).ToArray();
        values = values.Select(r => r.Select(x => (double)(float)x).ToArray()).ToArray();
        queries = queries.Select(r => r.Select(x => (double)(float)x).ToArray()).ToArray();
        return (b, cache, b.Upload(Flat(queries), Tokens, Heads * D), keys, values, queries);
    }

    private static float[] Run(CpuBackend b, KvCache cache, DeviceTensor q, KeySelection selection)
    {
        var output = b.Allocate(Tokens, Heads * D);
        b.SelectedAttention(new AttentionArgs(0, Tokens, Start, Heads, KvHeads, D, 1f / MathF.Sqrt(D)), selection, q, cache, output);
        var result = new float[Tokens * Heads * D];
        b.Read(output, result);
        return result;
    }

    [Fact]
    public void Attends_over_exactly_the_selected_keys()
    {
        var (b, cache, q, keys, values, queries) = Setup();
        var rng = new Random(3);
        var selection = new KeySelection(Tokens, Heads);
        for (int t = 0; t < Tokens; t++)
        {
            for (int h = 0; h < Heads; h++)
            {
                selection[t, h] = Enumerable.Range(0, Start + t + 1).Where(_ => rng.NextDouble() < 0.3).Append(0).Distinct().ToArray();
            }
        }
        var actual = Run(b, cache, q, selection);
        for (int t = 0; t < Tokens; t++)
        {
            for (int h = 0; h < Heads; h++)
            {
                int g = h / (Heads / KvHeads);
                var set = selection[t, h];
                var all = NaiveKascade.Scores(queries[t], keys, h, g, D, Start + t + 1);
                var p = NaiveKascade.Softmax(set.Select(j => all[j]).ToArray());
                for (int e = 0; e < D; e++)
                {
                    double expected = set.Select((j, i) => p[i] * values[j][g * D + e]).Sum();
                    Assert.True(Math.Abs(expected - actual[(t * Heads + h) * D + e]) < 1e-5, $"token {t} head {h} dim {e}");
                }
            }
        }
    }

    [Fact]
    public void Every_visible_key_is_dense_attention()
    {
        var (b, cache, q, _, _, _) = Setup();
        var selection = new KeySelection(Tokens, Heads);
        for (int t = 0; t < Tokens; t++)
        {
            selection.SetAllHeads(t, Enumerable.Range(0, Start + t + 1).ToArray());
        }
        var dense = b.Allocate(Tokens, Heads * D);
        b.Attention(new AttentionArgs(0, Tokens, Start, Heads, KvHeads, D, 1f / MathF.Sqrt(D)), q, cache, dense);
        var expected = new float[Tokens * Heads * D];
        b.Read(dense, expected);
        Compare.Close(expected, Run(b, cache, q, selection), 1e-5, 1e-5, "all keys selected vs dense");
    }

    [Fact]
    public void A_key_in_the_future_is_refused()
    {
        var (b, cache, q, _, _, _) = Setup();
        var selection = new KeySelection(Tokens, Heads);
        for (int t = 0; t < Tokens; t++)
        {
            selection.SetAllHeads(t, [0, Start + t + 1]);
        }
        Assert.ThrowsAny<Exception>(() => Run(b, cache, q, selection));
    }
}
