using Kascade.Core;
using Kascade.Cpu;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>The sampling rule (<see cref="Sampling"/>), the CPU backend's Sample op, and decoding through it.</summary>
public class SamplingTests
{
    private static readonly float[] Logits = [1f, 3f, 2f, 3f, -1f];

    private static int[] Draws(float[] logits, SamplingOptions options, int count) =>
        Enumerable.Range(0, count).Select(d => Sampling.Choose(logits, options, d)).ToArray();

    [Fact]
    public void Greedy_takes_the_first_maximum() => Assert.Equal(1, Sampling.Choose(Logits, new SamplingOptions(), 0));

    [Fact]
    public void Top_k_1_is_greedy_at_any_temperature() =>
        Assert.Equal(1, Sampling.Choose(Logits, new SamplingOptions(Temperature: 5f, TopK: 1), 3));

    [Fact]
    public void A_draw_is_a_function_of_seed_and_draw_number()
    {
        var options = new SamplingOptions(Temperature: 1f, Seed: 42);
        Assert.Equal(Draws(Logits, options, 50), Draws(Logits, options, 50));
        Assert.NotEqual(Draws(Logits, options, 50), Draws(Logits, options with { Seed = 43 }, 50));
        Assert.True(Draws(Logits, options, 50).Distinct().Count() > 2, "successive draws vary");
    }

    [Fact]
    public void Top_k_keeps_the_k_largest_and_their_ties()
    {
        Assert.Equal([1, 3], Draws(Logits, new SamplingOptions(Temperature: 1f, TopK: 2, Seed: 1), 400).Distinct().Order());
        // The 2nd largest logit (2) is shared by tokens 1 and 2: both stay, like HF's TopKLogitsWarper.
        float[] tied = [3f, 2f, 2f, 1f, 0f];
        Assert.Equal([0, 1, 2], Draws(tied, new SamplingOptions(Temperature: 1f, TopK: 2, Seed: 1), 400).Distinct().Order());
    }

    [Fact]
    public void Top_p_keeps_the_shortest_prefix_reaching_p()
    {
        // Probabilities ∝ e^3, e^3, e^2, e^1, e^-1: the two 3s hold 0.79, so 0.6 keeps {1, 3} and 0.85 adds token 2.
        Assert.Equal([1, 3], Draws(Logits, new SamplingOptions(Temperature: 1f, TopP: 0.6f, Seed: 2), 400).Distinct().Order());
        Assert.Equal([1, 2, 3], Draws(Logits, new SamplingOptions(Temperature: 1f, TopP: 0.85f, Seed: 2), 400).Distinct().Order());
        // Top-k first, then top-p over what it kept: k = 3 keeps {1, 2, 3} whose weights are e^3, e^2, e^3 → p 0.8 keeps {1, 3}.
        Assert.Equal([1, 3], Draws(Logits, new SamplingOptions(Temperature: 1f, TopP: 0.8f, TopK: 3, Seed: 2), 400).Distinct().Order());
    }

    [Theory]
    [InlineData(1f, 0)]
    [InlineData(0.7f, 4)]
    public void Draws_follow_the_tempered_softmax_of_the_kept_tokens(float temperature, int topK)
    {
        float[] logits = [0.5f, 2f, -1f, 1.5f, 0f, 1f];
        var options = new SamplingOptions(Temperature: temperature, TopK: topK, Seed: 7);
        const int n = 20000;
        var counts = new int[logits.Length];
        foreach (int token in Draws(logits, options, n))
        {
            counts[token]++;
        }
        var kept = topK == 0 ? logits : logits.Order().Reverse().Take(topK).ToArray();
        double z = kept.Sum(l => Math.Exp(l / temperature));
        for (int i = 0; i < logits.Length; i++)
        {
            double expected = kept.Contains(logits[i]) ? Math.Exp(logits[i] / temperature) / z : 0;
            Assert.InRange(counts[i] / (double)n, expected - 0.015, expected + 0.015);
        }
    }

    [Fact]
    public void Options_out_of_range_are_refused_with_their_name()
    {
        Assert.Contains("top-p", Assert.Throws<KascadeException>(() => new SamplingOptions(TopP: 0f).Check()).Message);
        Assert.Contains("top-k", Assert.Throws<KascadeException>(() => new SamplingOptions(TopK: -1).Check()).Message);
        Assert.Contains("temperature", Assert.Throws<KascadeException>(() => new SamplingOptions(Temperature: float.NaN).Check()).Message);
    }

    [Fact]
    public void The_cpu_op_samples_each_row_with_its_own_draw_and_counts_the_draws()
    {
        using var backend = new CpuBackend();
        var options = new SamplingOptions(Temperature: 1f, Seed: 5);
        float[] rows = [.. Logits, .. Logits.Reverse()];
        var step = backend.AllocateStepInputs(2);
        var logits = backend.Upload(rows, 2, Logits.Length);
        var ids = new int[2];
        backend.Sample(logits, options, step);
        backend.ReadTokens(step, ids);
        Assert.Equal([Sampling.Choose(Logits, options, 0), Sampling.Choose([.. Logits.Reverse()], options, 1)], ids);
        backend.Sample(logits, options, step);
        backend.ReadTokens(step, ids);
        Assert.Equal([Sampling.Choose(Logits, options, 2), Sampling.Choose([.. Logits.Reverse()], options, 3)], ids);
    }

    [Fact]
    public void Decode_samples_what_forward_and_the_rule_choose()
    {
        var runs = new InstrumentRuns();
        var model = runs.Directory.Value.Model;
        var ids = runs.Prompt(40);
        var options = new SamplingOptions(Temperature: 0.8f, TopP: 0.9f, TopK: 50, Seed: 11);
        using var sampled = model.CreateSession(ids.Length + 6, maxChunk: 16);
        var tokens = new List<int> { sampled.Prefill(ids, options) };
        for (int i = 0; i < 5; i++)
        {
            tokens.Add(sampled.Decode(options));
        }
        using var forward = model.CreateSession(ids.Length + 6, maxChunk: 16);
        var logits = new float[model.Config.VocabSize];
        forward.Prefill(ids, logits);
        var expected = new List<int>();
        for (int draw = 0; draw < 6; draw++)
        {
            expected.Add(Sampling.Choose(logits, options, draw));
            forward.Forward([expected[^1]], logits);
        }
        Assert.Equal(expected, tokens);
        Assert.Equal(ids.Length + 5, sampled.Position);
    }

    [Fact]
    public void The_decode_replay_check_passes_on_the_cpu()
    {
        using var backend = new CpuBackend();
        var results = Diagnostics.DecodeReplayCheck.Run(backend);
        Assert.Equal(2, results.Count);
        Assert.All(results, r => Assert.True(r.Passed, r.ToString()));
    }
}
