using System.Numerics.Tensors;

namespace Kascade.Core;

/// <summary>
/// Next-token sampling options; immutable. Temperature 0 (or <see cref="TopK"/> 1) is greedy; otherwise see
/// <see cref="Sampling"/> for the exact rule every backend implements.
/// </summary>
public sealed record SamplingOptions(float Temperature = 0f, float TopP = 1f, int TopK = 0, int Seed = 0)
{
    public bool IsGreedy => Temperature <= 0f || TopK == 1;

    /// <summary>"greedy", or the temperature and cut-offs (benchmark and parity labels).</summary>
    public string Label => IsGreedy ? "greedy" : FormattableString.Invariant($"T {Temperature} top-p {TopP} top-k {TopK}");

    /// <summary>Throws a <see cref="KascadeException"/> naming the first option out of range.</summary>
    public void Check()
    {
        if (!(Temperature >= 0f) || float.IsInfinity(Temperature))
        {
            throw new KascadeException($"temperature must be a finite number ≥ 0, not {Temperature}");
        }
        if (!(TopP > 0f && TopP <= 1f))
        {
            throw new KascadeException($"top-p must be in (0, 1], not {TopP}");
        }
        if (TopK < 0)
        {
            throw new KascadeException($"top-k must be ≥ 0 (0 keeps every token), not {TopK}");
        }
    }
}

/// <summary>
/// The sampling rule, written plainly: the reference the backends' kernels are checked against (they must choose the
/// same token for the same logits, options and draw).
/// <list type="bullet">
/// <item>Greedy: the first index of the largest logit (<c>torch.argmax</c>).</item>
/// <item>Otherwise each token has the log-weight <c>d = (logit − max) / T</c> and the probability weight
/// <c>w = floor(e^d · 2^40)</c>, an integer, so sums are exact in any order.</item>
/// <item>Top-k keeps every token whose logit is at least the k-th largest (ties at the boundary are all kept, like
/// HF's <c>TopKLogitsWarper</c>).</item>
/// <item>Top-p then keeps every kept token whose logit is at least τ, the largest logit for which the kept tokens
/// with logit ≥ τ hold <c>ceil(p · W)</c> of the kept weight W: the shortest descending prefix reaching p, with
/// its boundary ties.</item>
/// <item>The token is drawn from the kept ones in proportion to e^d by the Gumbel-max trick: the kept token with the
/// largest <c>d − ln(−ln u)</c> (lowest index on ties), u from <see cref="Uniform"/>(seed, draw, token). Each token
/// gets its own uniform, so no sorting or prefix sum is needed and the choice is the same in any evaluation order.</item>
/// </list>
/// Logits are compared through <see cref="OrderKey"/> (an unsigned integer in the order of the floats). A row with a NaN
/// or an infinity has no token: the rule gives <see cref="NonFinite"/>, which the session turns into an error.
/// </summary>
public static class Sampling
{
    /// <summary>The "token" chosen from logits that are not all finite: a broken model or checkpoint, never a real id.</summary>
    public const int NonFinite = -1;

    /// <summary>The fixed-point scale of the probability weights (2^40): a vocabulary of 2^23 tokens still sums below 2^63.</summary>
    public const float WeightScale = 1099511627776f;

    /// <summary>Chooses a token from <paramref name="logits"/> (<c>[vocab]</c> fp32) for draw <paramref name="draw"/> of the sequence.</summary>
    public static int Choose(ReadOnlySpan<float> logits, SamplingOptions options, long draw)
    {
        options.Check();
        if (!float.IsFinite(TensorPrimitives.MaxMagnitude(logits)))   // NaN propagates through MaxMagnitude
        {
            return NonFinite;
        }
        if (options.IsGreedy)
        {
            return TensorPrimitives.IndexOfMax(logits);
        }
        int n = logits.Length;
        float max = TensorPrimitives.Max(logits), temperature = options.Temperature;
        var keys = new uint[n];
        for (int i = 0; i < n; i++)
        {
            keys[i] = OrderKey(logits[i]);
        }
        // The descending order is only needed to cut: untruncated sampling draws over every token without sorting.
        var descending = options.TopK > 0 || options.TopP < 1f ? Enumerable.Range(0, n).OrderByDescending(i => keys[i]).ToArray() : [];
        uint threshold = 0;
        if (options.TopK > 0 && options.TopK < n)
        {
            threshold = keys[descending[options.TopK - 1]];
        }
        if (options.TopP < 1f)
        {
            ulong total = 0;
            foreach (int i in descending.TakeWhile(i => keys[i] >= threshold))
            {
                total += Weight(logits[i], max, temperature);
            }
            ulong target = Target(options.TopP, total), cumulative = 0;
            foreach (int i in descending)
            {
                cumulative += Weight(logits[i], max, temperature);
                if (cumulative >= target)
                {
                    threshold = keys[i];
                    break;
                }
            }
        }
        int best = -1;
        float bestScore = float.NegativeInfinity;
        for (int i = 0; i < n; i++)
        {
            if (keys[i] >= threshold)
            {
                float score = (logits[i] - max) / temperature + Gumbel(Uniform(options.Seed, draw, i));
                if (best < 0 || score > bestScore)
                {
                    (best, bestScore) = (i, score);
                }
            }
        }
        return best;
    }

    /// <summary>An unsigned key in the order of the floats (−0 just below +0): flip all bits of negatives, the sign of the rest.</summary>
    public static uint OrderKey(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
    }

    /// <summary>The fixed-point probability weight <c>floor(e^((logit − max) / T) · 2^40)</c>.</summary>
    public static ulong Weight(float logit, float max, float temperature) => (ulong)(MathF.Exp((logit - max) / temperature) * WeightScale);

    /// <summary>The weight the top-p set must reach: <c>ceil(p · total)</c>, in double as the kernels compute it.</summary>
    public static ulong Target(float topP, ulong total) => (ulong)Math.Ceiling(topP * (double)total);

    /// <summary>Gumbel noise <c>−ln(−ln u)</c>.</summary>
    public static float Gumbel(float u) => -MathF.Log(-MathF.Log(u));

    /// <summary>
    /// u in (0, 1) for <paramref name="token"/> of draw <paramref name="draw"/>: the top 23 bits of splitmix64 of
    /// (a key from seed and draw, token), centred in their interval so neither 0 nor 1 occurs.
    /// </summary>
    public static float Uniform(int seed, long draw, int token)
    {
        ulong key = Mix((ulong)(uint)seed * 0x9E3779B97F4A7C15UL + (ulong)draw * 0xD1B54A32D192ED03UL);
        ulong z = Mix(key + (ulong)token * 0x9E3779B97F4A7C15UL);
        return ((z >> 41) + 0.5f) * (1f / 8388608f);
    }

    /// <summary>The splitmix64 finaliser.</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
