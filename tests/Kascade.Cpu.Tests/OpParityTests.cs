using Kascade.Core;
using Kascade.Cpu;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary>Each CPU op against a scalar double reference over shape grids (llama.cpp's test-backend-ops idea).</summary>
public unsafe class OpParityTests
{
    private static float[] Random(int n, int seed, float scale = 1f)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => scale * (float)(r.NextDouble() * 2 - 1)).ToArray();
    }

    public static TheoryData<int, int, int> GemmShapes()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int m in new[] { 1, 3, 4, 9 })
        {
            foreach (int n in new[] { 1, 4, 7, 33 })
            {
                foreach (int k in new[] { 1, 8, 13, 64, 130 })
                {
                    data.Add(m, n, k);
                }
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(GemmShapes))]
    public void Gemm_matches_double_reference(int m, int n, int k)
    {
        var a = Random(m * (k + 3), 1);
        var b = Random(n * (k + 5), 2);
        var c = new float[m * (n + 2)];
        fixed (float* ap = a, bp = b, cp = c)
        {
            Gemm.MultiplyTransposed(m, n, k, ap, k + 3, bp, k + 5, cp, n + 2);
        }
        var expected = new float[m * n];
        var actual = new float[m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                {
                    s += (double)a[i * (k + 3) + p] * b[j * (k + 5) + p];
                }
                expected[i * n + j] = (float)s;
                actual[i * n + j] = c[i * (n + 2) + j];
            }
        }
        Compare.Close(expected, actual, Tolerances.KernelAbsolute, Tolerances.KernelRelative, $"gemm {m}x{n}x{k}");
    }

    public static TheoryData<int, int, int, int> AttentionShapes()
    {
        var data = new TheoryData<int, int, int, int>();
        foreach (int headDim in new[] { 64, 128 })
        {
            foreach (int group in new[] { 1, 2, 4, 8 })
            {
                foreach (var (start, tokens) in new[] { (0, 1), (0, 37), (50, 1), (45, 20), (0, 100) })
                {
                    data.Add(headDim, group, start, tokens);
                }
            }
        }
        return data;
    }

    /// <summary>A chunk of <paramref name="tokens"/> queries at position <paramref name="start"/> over a cache filled before it.</summary>
    [Theory]
    [MemberData(nameof(AttentionShapes))]
    public void Attention_matches_double_reference(int headDim, int group, int start, int tokens)
    {
        const int kvHeads = 2;
        int heads = kvHeads * group, total = start + tokens;
        using var backend = new CpuBackend();
        var shape = new KvCacheShape(1, kvHeads, headDim, total + 3);
        using var cache = backend.AllocateKvCache(shape);
        var kAll = Random(total * kvHeads * headDim, 3);
        var vAll = Random(total * kvHeads * headDim, 4);
        var qAll = Random(tokens * heads * headDim, 5, 2f);
        var k = (CpuTensor)backend.Allocate(total, kvHeads * headDim);
        var v = (CpuTensor)backend.Allocate(total, kvHeads * headDim);
        kAll.CopyTo(k.Span);
        vAll.CopyTo(v.Span);
        if (start > 0)
        {
            backend.AppendKv(cache, 0, 0, k.Take(start), v.Take(start));
        }
        backend.AppendKv(cache, 0, start, k.Slice(start, tokens), v.Slice(start, tokens));
        var q = (CpuTensor)backend.Allocate(tokens, heads * headDim);
        qAll.CopyTo(q.Span);
        var output = (CpuTensor)backend.Allocate(tokens, heads * headDim);
        float scale = 1f / MathF.Sqrt(headDim);
        backend.Attention(new AttentionArgs(0, tokens, start, heads, kvHeads, headDim, scale), q, cache, output);

        var expected = new float[tokens * heads * headDim];
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                int kvh = h / group, visible = start + t + 1;
                var s = new double[visible];
                for (int j = 0; j < visible; j++)
                {
                    for (int e = 0; e < headDim; e++)
                    {
                        s[j] += (double)qAll[(t * heads + h) * headDim + e] * kAll[(j * kvHeads + kvh) * headDim + e];
                    }
                    s[j] *= scale;
                }
                double max = s.Max();
                double z = s.Sum(x => Math.Exp(x - max));
                for (int e = 0; e < headDim; e++)
                {
                    double o = 0;
                    for (int j = 0; j < visible; j++)
                    {
                        o += Math.Exp(s[j] - max) / z * vAll[(j * kvHeads + kvh) * headDim + e];
                    }
                    expected[(t * heads + h) * headDim + e] = (float)o;
                }
            }
        }
        Compare.Close(expected, output.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, $"attention d{headDim} g{group} start{start} tokens{tokens}");
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F32)]
    public void MatMul_widens_every_weight_dtype_and_adds_bias(DType dtype)
    {
        const int m = 5, n = 37, k = 24;
        var w = Random(n * k, 6);
        var bias = Random(n, 7);
        var x = Random(m * k, 8);
        byte[] Encode(float[] values) => dtype switch
        {
            DType.BF16 => values.SelectMany(v => BitConverter.GetBytes(DTypes.SingleToBf16(v))).ToArray(),
            DType.F16 => values.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray(),
            _ => values.SelectMany(BitConverter.GetBytes).ToArray(),
        };
        float Stored(float v) => dtype switch
        {
            DType.BF16 => DTypes.RoundToBf16(v),
            DType.F16 => (float)(Half)v,
            _ => v,
        };
        var wBytes = Encode(w);
        var bBytes = Encode(bias);
        using var backend = new CpuBackend();
        fixed (byte* wp = wBytes, bp = bBytes)
        {
            var weight = backend.LoadWeight(new WeightSource("w", dtype, n, k, (nint)wp));
            var b = backend.LoadWeight(new WeightSource("b", dtype, 1, n, (nint)bp));
            var xt = (CpuTensor)backend.Allocate(m, k);
            x.CopyTo(xt.Span);
            var y = (CpuTensor)backend.Allocate(m, n);
            backend.MatMul(xt, weight, b, y);
            var expected = new float[m * n];
            for (int i = 0; i < m; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    double s = Stored(bias[j]);
                    for (int p = 0; p < k; p++)
                    {
                        s += (double)x[i * k + p] * Stored(w[j * k + p]);
                    }
                    expected[i * n + j] = (float)s;
                }
            }
            Compare.Close(expected, y.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, $"matmul {dtype}");
        }
    }

    [Fact]
    public void RopeAppendKv_rotates_q_and_k_and_caches_the_rotated_keys_for_every_scaling()
    {
        foreach (var rope in new[]
        {
            new RopeConfig(10000),
            new RopeConfig(500000, RopeScalingType.Linear, Factor: 4),
            new RopeConfig(500000, RopeScalingType.Llama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 64),
        })
        {
            const int heads = 6, kvHeads = 2, d = 64, tokens = 9, start = 300;
            using var backend = new CpuBackend();
            backend.SetRope(rope, d, start + tokens);
            var q = Random(tokens * heads * d, 9);
            var k = Random(tokens * kvHeads * d, 10);
            var qt = (CpuTensor)backend.Allocate(tokens, heads * d);
            var kt = (CpuTensor)backend.Allocate(tokens, kvHeads * d);
            q.CopyTo(qt.Span);
            k.CopyTo(kt.Span);
            var cache = backend.AllocateKvCache(new KvCacheShape(1, kvHeads, d, start + tokens));
            backend.RopeAppendKv(new AttentionArgs(0, tokens, start, heads, kvHeads, d, 1f), qt, kt, backend.Allocate(tokens, kvHeads * d), cache);
            var config = new ModelConfig(ModelArchitecture.Llama, "LlamaForCausalLM", 10, heads * d, 10, 1, heads, kvHeads, d, 1024, 1e-5, rope, true, false, false, [], null, DType.BF16);
            float[] Rotated(float[] x, int width)
            {
                var expected = new float[x.Length];
                for (int i = 0; i < tokens; i++)
                {
                    var row = x.AsSpan(i * width, width).ToArray().Select(v => (double)v).ToArray();
                    NaiveReference.Rotate(row, config, start + i);
                    row.Select(v => (float)v).ToArray().CopyTo(expected, i * width);
                }
                return expected;
            }
            var expectedK = Rotated(k, kvHeads * d);
            Compare.Close(Rotated(q, heads * d), qt.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, $"rope q {rope.Scaling}");
            Compare.Close(expectedK, kt.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, $"rope k {rope.Scaling}");
            // The cache holds each KV head's rotated keys at positions start .. start + tokens.
            var keys = new float[kvHeads * (start + tokens) * d];
            backend.ReadKeys(cache, 0, start + tokens, keys);
            for (int t = 0; t < tokens; t++)
            {
                for (int h = 0; h < kvHeads; h++)
                {
                    Assert.Equal(kt.Span.Slice((t * kvHeads + h) * d, d).ToArray(), keys.AsSpan((h * (start + tokens) + start + t) * d, d).ToArray());
                }
            }
        }
    }

    [Fact]
    public void RmsNorm_per_row_and_per_head()
    {
        const int rows = 3, width = 16, cols = 64;
        var x = Random(rows * cols, 10, 3f);
        var gamma = Random(width, 11);
        using var backend = new CpuBackend();
        fixed (float* gp = gamma)
        {
            var w = backend.LoadWeight(new WeightSource("g", DType.F32, 1, width, (nint)gp));
            var t = (CpuTensor)backend.Allocate(rows, cols);
            x.CopyTo(t.Span);
            var y = (CpuTensor)backend.Allocate(rows, cols);
            backend.RmsNorm(t, w, width, 1e-5f, y);
            var expected = new float[x.Length];
            for (int g = 0; g < rows * cols / width; g++)
            {
                var seg = x.AsSpan(g * width, width).ToArray().Select(v => (double)v).ToArray();
                NaiveReference.RmsNorm(seg, gamma.Select(v => (double)v).ToArray(), 1e-5).Select(v => (float)v).ToArray().CopyTo(expected, g * width);
            }
            Compare.Close(expected, y.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "rmsnorm");
        }
    }

    /// <summary>x · wᵀ in double over fp32 inputs: [m, n].</summary>
    private static double[] Product(float[] x, float[] w, int m, int n, int k)
    {
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                {
                    s += (double)x[i * k + p] * w[j * k + p];
                }
                y[i * n + j] = s;
            }
        }
        return y;
    }

    private static CpuTensor Tensor(CpuBackend backend, float[] values, int rows, int cols)
    {
        var t = (CpuTensor)backend.Allocate(rows, cols);
        values.CopyTo(t.Span);
        return t;
    }

    /// <summary>
    /// The values of <see cref="Load"/>'s weights, kept for the test process: a weight reads its source in place, so the
    /// array must neither move nor be collected while the weight lives (a fixed block that ended before the product let
    /// the GC move it: NaN read from stale memory in one CI run's SSE-only pass, session 23).
    /// </summary>
    private static readonly System.Collections.Concurrent.ConcurrentBag<float[]> WeightValues = [];

    private static Weight Load(CpuBackend backend, string name, float[] values, int rows, int cols)
    {
        var pinned = GC.AllocateArray<float>(values.Length, pinned: true);
        values.CopyTo(pinned, 0);
        WeightValues.Add(pinned);
        fixed (float* p = pinned)
        {
            return backend.LoadWeight(new WeightSource(name, DType.F32, rows, cols, (nint)p));
        }
    }

    [Theory]
    [InlineData(1, 24, 37)]
    [InlineData(5, 64, 9)]
    [InlineData(12, 130, 40)]
    public void MatMul_accumulate_adds_the_product_and_bias_to_the_output(int m, int k, int n)
    {
        using var backend = new CpuBackend();
        var (x, w, bias, residual) = (Random(m * k, 1), Random(n * k, 2), Random(n, 3), Random(m * n, 4));
        var output = Tensor(backend, residual, m, n);
        backend.MatMul(Tensor(backend, x, m, k), Load(backend, "w", w, n, k), Load(backend, "b", bias, 1, n), output, accumulate: true);
        var product = Product(x, w, m, n, k);
        var expected = product.Select((p, i) => (float)(residual[i] + p + bias[i % n])).ToArray();
        Compare.Close(expected, output.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "matmul accumulate");
    }

    [Fact]
    public void MatMul_over_one_input_writes_each_projection_as_its_own_product()
    {
        const int m = 3, k = 40;
        int[] rows = [16, 5, 5, 7, 9];
        using var backend = new CpuBackend();
        var x = Tensor(backend, Random(m * k, 5), m, k);
        var weights = rows.Select((n, i) => Load(backend, $"w{i}", Random(n * k, 10 + i), n, k)).ToArray();
        var biases = rows.Select((n, i) => i % 2 == 0 ? Load(backend, $"b{i}", Random(n, 20 + i), 1, n) : null).ToArray();
        var outputs = rows.Select(n => (CpuTensor)backend.Allocate(m, n)).ToArray();
        backend.MatMul(x, [.. rows.Select((_, i) => new Projection(weights[i], biases[i], outputs[i]))]);
        for (int i = 0; i < rows.Length; i++)
        {
            var alone = (CpuTensor)backend.Allocate(m, rows[i]);
            backend.MatMul(x, weights[i], biases[i], alone);
            Assert.Equal(alone.Span.ToArray(), outputs[i].Span.ToArray());
        }
    }

    [Theory]
    [InlineData(1, 32, 50)]
    [InlineData(6, 72, 13)]
    public void MatMulSwiGlu_is_silu_of_the_gate_times_the_up_projection(int m, int k, int n)
    {
        using var backend = new CpuBackend();
        var (x, gate, up) = (Random(m * k, 6), Random(n * k, 7), Random(n * k, 8));
        var output = (CpuTensor)backend.Allocate(m, n);
        backend.MatMulSwiGlu(Tensor(backend, x, m, k), Load(backend, "gate", gate, n, k), Load(backend, "up", up, n, k), output, backend.Allocate(m, n));
        var g = Product(x, gate, m, n, k);
        var u = Product(x, up, m, n, k);
        var expected = g.Select((v, i) => (float)(v / (1 + Math.Exp(-v)) * u[i])).ToArray();
        Compare.Close(expected, output.Span, Tolerances.KernelAbsolute, Tolerances.KernelRelative, "matmul swiglu");
    }
}
