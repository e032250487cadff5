using Kascade.Core;
using Kascade.Runtime.Loading;

namespace Kascade.Testing;

/// <summary>
/// The readable reference forward: scalar loops, double accumulation, no cache, no chunking; every
/// position attends to every earlier one. Written from the HF modeling code, not from our kernels.
/// </summary>
public static class NaiveReference
{
    /// <summary>Logits <c>[ids.Length][vocab]</c> of a whole sequence.</summary>
    public static double[][] Forward(ModelConfig c, WeightStore store, int[] ids)
    {
        double[] Vec(string name, int n) => Read(store, name, 1, n);
        double[] Mat(string name, int rows, int cols) => Read(store, name, rows, cols);

        int t = ids.Length, hid = c.HiddenSize, d = c.HeadDim;
        var embed = Mat("model.embed_tokens.weight", c.VocabSize, hid);
        var x = new double[t][];
        for (int i = 0; i < t; i++)
        {
            x[i] = embed.AsSpan(ids[i] * hid, hid).ToArray();
        }
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var wq = Mat(p + "self_attn.q_proj.weight", c.QDim, hid);
            var wk = Mat(p + "self_attn.k_proj.weight", c.KvDim, hid);
            var wv = Mat(p + "self_attn.v_proj.weight", c.KvDim, hid);
            var wo = Mat(p + "self_attn.o_proj.weight", hid, c.QDim);
            var q = new double[t][];
            var k = new double[t][];
            var v = new double[t][];
            for (int i = 0; i < t; i++)
            {
                var h = RmsNorm(x[i], Vec(p + "input_layernorm.weight", hid), c.RmsNormEps);
                q[i] = MatVec(wq, h, c.QDim);
                k[i] = MatVec(wk, h, c.KvDim);
                v[i] = MatVec(wv, h, c.KvDim);
                if (c.AttentionBias)
                {
                    AddInPlace(q[i], Vec(p + "self_attn.q_proj.bias", c.QDim));
                    AddInPlace(k[i], Vec(p + "self_attn.k_proj.bias", c.KvDim));
                    AddInPlace(v[i], Vec(p + "self_attn.v_proj.bias", c.KvDim));
                }
                if (c.QkNorm)
                {
                    NormHeads(q[i], Vec(p + "self_attn.q_norm.weight", d), d, c.RmsNormEps);
                    NormHeads(k[i], Vec(p + "self_attn.k_norm.weight", d), d, c.RmsNormEps);
                }
                Rotate(q[i], c, i);
                Rotate(k[i], c, i);
            }
            for (int i = 0; i < t; i++)
            {
                var attn = new double[c.QDim];
                for (int head = 0; head < c.Heads; head++)
                {
                    int kvHead = head / c.Group;
                    var scores = new double[i + 1];
                    for (int j = 0; j <= i; j++)
                    {
                        double s = 0;
                        for (int e = 0; e < d; e++)
                        {
                            s += q[i][head * d + e] * k[j][kvHead * d + e];
                        }
                        scores[j] = s / Math.Sqrt(d);
                    }
                    double max = scores.Max(), sum = 0;
                    for (int j = 0; j <= i; j++)
                    {
                        scores[j] = Math.Exp(scores[j] - max);
                        sum += scores[j];
                    }
                    for (int j = 0; j <= i; j++)
                    {
                        for (int e = 0; e < d; e++)
                        {
                            attn[head * d + e] += scores[j] / sum * v[j][kvHead * d + e];
                        }
                    }
                }
                AddInPlace(x[i], MatVec(wo, attn, hid));
                if (c.AttentionBias && c.Architecture != ModelArchitecture.Qwen2)
                {
                    // HF: Llama and Qwen3 bias o_proj with attention_bias too; Qwen2 biases q, k and v only.
                    AddInPlace(x[i], Vec(p + "self_attn.o_proj.bias", hid));
                }
            }
            var gate = Mat(p + "mlp.gate_proj.weight", c.IntermediateSize, hid);
            var up = Mat(p + "mlp.up_proj.weight", c.IntermediateSize, hid);
            var down = Mat(p + "mlp.down_proj.weight", hid, c.IntermediateSize);
            for (int i = 0; i < t; i++)
            {
                var h = RmsNorm(x[i], Vec(p + "post_attention_layernorm.weight", hid), c.RmsNormEps);
                var g = MatVec(gate, h, c.IntermediateSize);
                var u = MatVec(up, h, c.IntermediateSize);
                for (int e = 0; e < g.Length; e++)
                {
                    g[e] = g[e] / (1 + Math.Exp(-g[e])) * u[e];
                }
                AddInPlace(x[i], MatVec(down, g, hid));
            }
        }
        var head0 = c.TieWordEmbeddings ? embed : Mat("lm_head.weight", c.VocabSize, hid);
        var norm = Vec("model.norm.weight", hid);
        return x.Select(row => MatVec(head0, RmsNorm(row, norm, c.RmsNormEps), c.VocabSize)).ToArray();
    }

    public static double[] Read(WeightStore store, string name, int rows, int cols)
    {
        var src = store.Get(name, rows, cols);
        var f = new float[rows * cols];
        unsafe
        {
            DTypes.ToSingle(src.DType, new ReadOnlySpan<byte>((void*)src.Pointer, f.Length * src.DType.SizeOf()), f);
        }
        return f.Select(v => (double)v).ToArray();
    }

    public static double[] RmsNorm(double[] x, double[] w, double eps)
    {
        double ms = x.Sum(v => v * v) / x.Length;
        double inv = 1 / Math.Sqrt(ms + eps);
        return x.Select((v, i) => v * inv * w[i]).ToArray();
    }

    public static double[] MatVec(double[] m, double[] x, int rows)
    {
        int cols = x.Length;
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int e = 0; e < cols; e++)
            {
                s += m[r * cols + e] * x[e];
            }
            y[r] = s;
        }
        return y;
    }

    /// <summary>HF rotate_half RoPE; the angle is rounded like HF's fp32 <c>inv_freq · position</c>.</summary>
    public static void Rotate(double[] x, ModelConfig c, int position)
    {
        var inv = Rope.InverseFrequencies(c.Rope, c.HeadDim);
        int d = c.HeadDim, half = d / 2;
        for (int h = 0; h < x.Length / d; h++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = (float)inv[i] * (float)position;
                double a = x[h * d + i], b = x[h * d + i + half];
                x[h * d + i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                x[h * d + i + half] = b * Math.Cos(angle) + a * Math.Sin(angle);
            }
        }
    }

    private static void NormHeads(double[] x, double[] w, int d, double eps)
    {
        for (int h = 0; h < x.Length / d; h++)
        {
            var n = RmsNorm(x.AsSpan(h * d, d).ToArray(), w, eps);
            n.CopyTo(x, h * d);
        }
    }

    private static void AddInPlace(double[] x, double[] y)
    {
        for (int i = 0; i < x.Length; i++)
        {
            x[i] += y[i];
        }
    }
}
