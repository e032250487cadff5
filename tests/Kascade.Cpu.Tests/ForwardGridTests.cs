using Kascade.Runtime;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary>The optimised CPU forward against <see cref="NaiveReference"/> on random models over a grid of shapes.</summary>
public class ForwardGridTests
{
    public static TheoryData<int, int, string, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, string, int, bool>();
        foreach (int headDim in new[] { 64, 128 })
        {
            foreach (int group in new[] { 1, 2, 4, 8 })
            {
                data.Add(headDim, group, "LlamaForCausalLM", 45, false);
            }
        }
        data.Add(32, 2, "Qwen2ForCausalLM", 33, false);
        data.Add(32, 4, "Qwen3ForCausalLM", 17, false);
        data.Add(16, 1, "MistralForCausalLM", 70, false);
        // attention_bias = true: q, k, v and o biased in Llama and Qwen3 (the checkpoint must hold all four).
        data.Add(32, 2, "LlamaForCausalLM", 21, true);
        data.Add(32, 2, "Qwen3ForCausalLM", 21, true);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Chunked_prefill_then_decode_matches_naive_reference(int headDim, int group, string architecture, int length, bool attentionBias)
    {
        using var dir = new TempDirectory();
        var shape = new RandomModelShape(headDim, Heads: 2 * group, KvHeads: 2, Architecture: architecture, Tied: architecture != "Qwen3ForCausalLM", AttentionBias: attentionBias);
        RandomModel.Write(dir.Path, shape, seed: headDim * 31 + group);
        var config = ConfigLoader.Load(dir.Path);
        using var store = WeightStore.Open(dir.Path);
        var rng = new Random(length);
        var ids = Enumerable.Range(0, length).Select(_ => rng.Next(shape.Vocab)).ToArray();
        var expected = NaiveReference.Forward(config, store, ids);

        using var model = LlamaModel.Load(config, store, new CpuBackend());
        // Chunks of 16 (not a divisor of the length), then one-token decode steps for the last 5 positions.
        using var session = model.CreateSession(length, maxChunk: 16);
        int prefill = length - 5;
        for (int start = 0; start < prefill; start += 16)
        {
            int n = Math.Min(16, prefill - start);
            var logits = session.ForwardAll(ids.AsSpan(start, n));
            for (int t = 0; t < n; t++)
            {
                Check(expected[start + t], logits.AsSpan(t * config.VocabSize, config.VocabSize), start + t);
            }
        }
        var last = new float[config.VocabSize];
        for (int p = prefill; p < length; p++)
        {
            session.Forward(ids.AsSpan(p, 1), last);
            Check(expected[p], last, p);
        }
    }

    private static void Check(double[] expected, ReadOnlySpan<float> actual, int position) =>
        Compare.Close(expected.Select(v => (float)v).ToArray(), actual, Tolerances.TinyModelLogits, Tolerances.TinyModelLogits, $"logits at position {position}");
}
