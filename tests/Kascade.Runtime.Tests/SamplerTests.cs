using Kascade.Runtime.Generation;
using Xunit;

namespace Kascade.Runtime.Tests;

public class SamplerTests
{
    private static readonly float[] Logits = [1f, 3f, 2f, 3f, -1f];

    [Fact]
    public void Greedy_takes_the_first_maximum() => Assert.Equal(1, new Sampler(new SamplingOptions()).Sample(Logits));

    [Fact]
    public void Top_k_1_is_greedy_at_any_temperature() =>
        Assert.Equal(1, new Sampler(new SamplingOptions(Temperature: 5f, TopK: 1)).Sample(Logits));

    [Fact]
    public void Same_seed_same_tokens_other_seed_other_tokens()
    {
        var options = new SamplingOptions(Temperature: 1f, Seed: 42);
        int[] Run(SamplingOptions o)
        {
            var s = new Sampler(o);
            return Enumerable.Range(0, 50).Select(_ => s.Sample(Logits)).ToArray();
        }
        Assert.Equal(Run(options), Run(options));
        Assert.NotEqual(Run(options), Run(options with { Seed = 43 }));
    }

    [Fact]
    public void Top_k_and_top_p_restrict_the_candidates()
    {
        var topK = new Sampler(new SamplingOptions(Temperature: 1f, TopK: 2, Seed: 1));
        var seen = Enumerable.Range(0, 400).Select(_ => topK.Sample(Logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 3 }, seen);

        // Probabilities ∝ e^3, e^3, e^2, e^1, e^-1: the two 3s hold 0.665, so top-p 0.6 keeps exactly {1, 3}.
        var topP = new Sampler(new SamplingOptions(Temperature: 1f, TopP: 0.6f, Seed: 2));
        Assert.Equal(new HashSet<int> { 1, 3 }, Enumerable.Range(0, 400).Select(_ => topP.Sample(Logits)).ToHashSet());
    }

    [Fact]
    public void Sampling_follows_the_softmax_distribution()
    {
        var s = new Sampler(new SamplingOptions(Temperature: 1f, Seed: 7));
        var counts = new int[Logits.Length];
        const int n = 20000;
        for (int i = 0; i < n; i++)
        {
            counts[s.Sample(Logits)]++;
        }
        double z = Logits.Sum(l => Math.Exp(l));
        for (int i = 0; i < Logits.Length; i++)
        {
            double expected = Math.Exp(Logits[i]) / z;
            Assert.InRange(counts[i] / (double)n, expected - 0.015, expected + 0.015);
        }
    }
}
