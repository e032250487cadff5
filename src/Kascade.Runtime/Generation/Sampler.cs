using System.Numerics.Tensors;

namespace Kascade.Runtime.Generation;

/// <summary>
/// Next-token sampling options. Temperature 0 is greedy (argmax, lowest id on ties, like <c>torch.argmax</c>);
/// otherwise logits are divided by the temperature, cut to the <see cref="TopK"/> best (0 = all), then to the
/// smallest set whose probability reaches <see cref="TopP"/>, and sampled with a generator seeded by <see cref="Seed"/>.
/// </summary>
public sealed record SamplingOptions(float Temperature = 0f, float TopP = 1f, int TopK = 0, int Seed = 0)
{
    public bool IsGreedy => Temperature <= 0f || TopK == 1;
}

public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly Random _random;
    private int[] _order = [];
    private float[] _probabilities = [];

    public Sampler(SamplingOptions options)
    {
        _options = options;
        _random = new Random(options.Seed);
    }

    /// <summary>Chooses a token from <paramref name="logits"/> (<c>[vocab]</c>, fp32; left unchanged).</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (_options.IsGreedy)
        {
            return TensorPrimitives.IndexOfMax(logits);
        }
        int vocab = logits.Length;
        if (_order.Length != vocab)
        {
            _order = new int[vocab];
            _probabilities = new float[vocab];
        }
        for (int i = 0; i < vocab; i++)
        {
            _order[i] = i;
            _probabilities[i] = logits[i] / _options.Temperature;
        }
        // Descending by logit, ties by id, so the candidate set is deterministic.
        var probs = _probabilities;
        Array.Sort(_order, (a, b) => probs[a] != probs[b] ? probs[b].CompareTo(probs[a]) : a.CompareTo(b));
        int keep = _options.TopK > 0 ? Math.Min(_options.TopK, vocab) : vocab;
        var candidates = new float[keep];
        for (int i = 0; i < keep; i++)
        {
            candidates[i] = probs[_order[i]];
        }
        TensorPrimitives.SoftMax(candidates, candidates);
        if (_options.TopP < 1f)
        {
            float cumulative = 0f;
            int cut = 0;
            while (cut < keep)
            {
                cumulative += candidates[cut++];
                if (cumulative >= _options.TopP)
                {
                    break;
                }
            }
            keep = cut;
        }
        float total = TensorPrimitives.Sum(candidates.AsSpan(0, keep));
        double r = _random.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            r -= candidates[i];
            if (r <= 0)
            {
                return _order[i];
            }
        }
        return _order[keep - 1];
    }
}
