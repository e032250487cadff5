namespace Kascade.Core;

/// <summary>
/// Rotary-embedding inverse frequencies for one model, with HF's scaling rules applied
/// (non-interleaved "rotate half" layout: dimension i pairs with i + HeadDim/2).
/// </summary>
public static class Rope
{
    /// <summary>Inverse frequencies, length <c>headDim / 2</c>, in double so every backend starts from the same values.</summary>
    public static double[] InverseFrequencies(RopeConfig rope, int headDim)
    {
        int half = headDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++)
        {
            inv[i] = 1.0 / Math.Pow(rope.Theta, 2.0 * i / headDim);
        }
        switch (rope.Scaling)
        {
            case RopeScalingType.Linear:
                for (int i = 0; i < half; i++)
                {
                    inv[i] /= rope.Factor;
                }
                break;
            case RopeScalingType.Llama3:
                // Llama 3.1: keep high frequencies, divide low ones by the factor, interpolate between.
                double lowFreqWavelen = rope.OriginalMaxPositions / rope.LowFreqFactor;
                double highFreqWavelen = rope.OriginalMaxPositions / rope.HighFreqFactor;
                for (int i = 0; i < half; i++)
                {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowFreqWavelen)
                    {
                        inv[i] /= rope.Factor;
                    }
                    else if (wavelen >= highFreqWavelen)
                    {
                        double smooth = (rope.OriginalMaxPositions / wavelen - rope.LowFreqFactor) / (rope.HighFreqFactor - rope.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / rope.Factor + smooth * inv[i];
                    }
                }
                break;
        }
        return inv;
    }

    /// <summary>
    /// cos and sin tables, each <c>[positions, headDim/2]</c> fp32 row-major, computed in double and rounded once.
    /// </summary>
    public static (float[] Cos, float[] Sin) Tables(RopeConfig rope, int headDim, int positions)
    {
        var inv = InverseFrequencies(rope, headDim);
        int half = headDim / 2;
        var cos = new float[positions * half];
        var sin = new float[positions * half];
        for (int p = 0; p < positions; p++)
        {
            for (int i = 0; i < half; i++)
            {
                // HF computes the angle in fp32: (inv_freq.float() @ position.float()); match that rounding.
                float angle = (float)inv[i] * p;
                cos[p * half + i] = MathF.Cos(angle);
                sin[p * half + i] = MathF.Sin(angle);
            }
        }
        return (cos, sin);
    }
}
