using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// The layer ops around attention: the linear layers (one weight, with bias, accumulating into a residual; several
/// weights over one input; the gated MLP) and the rotation with the KV append. Row counts cover the GEMV (1–8 rows,
/// a decode step) and the GEMM (a prefill chunk) on either side of the CUDA backend's switch.
/// </summary>
public static partial class BackendParity
{
    private static void LayerOpCases(IBackend reference, IBackend candidate, Random rng, Action<ParityResult> record)
    {
        foreach (var (m, k, n) in new[] { (1, 256, 768), (1, 4096, 14336), (7, 4096, 512), (8, 14336, 4096), (9, 256, 100), (33, 128, 1000), (512, 256, 8192) })
        {
            var x = Bf16(Random(rng, m * k, 1));
            var weight = Bf16(Random(rng, n * k, 0.1f));
            var bias = Random(rng, n, 1);
            var residual = Random(rng, m * n, 2);
            foreach (bool accumulate in new[] { false, true })
            {
                record(Compare(accumulate ? "matmul accumulate" : "matmul", $"{m}x{k} · {n}x{k}ᵀ + bias", reference, candidate, (b, w) =>
                {
                    var o = b.Upload(residual, m, n);
                    b.MatMul(b.Upload(x, m, k), w[0], w[1], o, accumulate);
                    return o;
                }, [("w", weight, n, k), ("bias", bias, 1, n)]));
            }
        }
        // q/k/v shapes (Llama 3.2-1B's 2048 → 2048/512/512, Qwen2.5-0.5B's 896 → 896/128/128 with biases), and five
        // weights: more than one GEMV launch takes.
        foreach (var (m, k, rows, withBias) in new[]
        {
            (1, 2048, new[] { 2048, 512, 512 }, false), (5, 896, new[] { 896, 128, 128 }, true), (8, 256, new[] { 256, 64, 64 }, true),
            (9, 256, new[] { 256, 64, 64 }, true), (33, 128, new[] { 100, 40, 40 }, false), (3, 256, new[] { 64, 72, 80, 88, 96 }, true),
        })
        {
            var x = Bf16(Random(rng, m * k, 1));
            var weights = rows.Select((n, i) => ($"w{i}", Bf16(Random(rng, n * k, 0.1f)), n, k))
                .Concat(rows.Select((n, i) => ($"bias{i}", Random(rng, n, 1), 1, n))).ToArray();
            record(Compare("matmul over one input", $"{m}x{k} · [{string.Join(", ", rows)}]x{k}ᵀ{(withBias ? " + bias" : "")}", reference, candidate, (b, w) =>
            {
                var outputs = rows.Select(n => b.Allocate(m, n)).ToArray();
                var projections = rows.Select((_, i) => new Projection(w[i], withBias ? w[rows.Length + i] : null, outputs[i])).ToArray();
                b.MatMul(b.Upload(x, m, k), projections);
                return Concatenated(b, outputs);
            }, weights));
        }
        foreach (var (m, k, n) in new[] { (1, 2048, 5632), (4, 256, 1000), (8, 512, 1376), (9, 256, 1000), (64, 128, 300) })
        {
            var x = Bf16(Random(rng, m * k, 1));
            var gate = Bf16(Random(rng, n * k, 0.1f));
            var up = Bf16(Random(rng, n * k, 0.1f));
            record(Compare("matmul swiglu", $"{m}x{k} · {n}x{k}ᵀ gate and up", reference, candidate, (b, w) =>
            {
                var o = b.Allocate(m, n);
                b.MatMulSwiGlu(b.Upload(x, m, k), w[0], w[1], o, b.Allocate(m, n));
                return o;
            }, [("gate", gate, n, k), ("up", up, n, k)]));
        }
        foreach (var rope in new[] { new RopeConfig(500000), new RopeConfig(500000, RopeScalingType.Llama3, 8, 1, 4, 8192) })
        {
            foreach (var (heads, kvHeads, d, start, tokens, onDevice) in new[]
            {
                (8, 2, 128, 0, 5, false), (4, 4, 64, 1000, 1, true), (28, 4, 128, 300, 37, false), (32, 8, 128, 2000, 3, true),
            })
            {
                foreach (var check in RopeAppendCases(reference, candidate, rng, rope, heads, kvHeads, d, start, tokens, onDevice))
                {
                    record(check);
                }
            }
        }
    }

    /// <summary>
    /// <see cref="IBackend.RopeAppendKv"/> over a prefix of <paramref name="start"/> positions and then a chunk of
    /// <paramref name="tokens"/> at it (its start read from the step on the device when <paramref name="onDevice"/>):
    /// the rotated q and k against the fp32 bound, and what the cache holds — its keys, and dense attention of the chunk
    /// over it, which reads the values too — against the bf16 cache's.
    /// </summary>
    private static IEnumerable<ParityResult> RopeAppendCases(IBackend reference, IBackend candidate, Random rng, RopeConfig rope, int heads, int kvHeads, int d,
        int start, int tokens, bool onDevice)
    {
        int total = start + tokens;
        // Rotated keys are not bf16-exact, so the CUDA cache rounds them where the CPU's keeps fp32: inputs of magnitude 1
        // keep that rounding (2⁻⁹ relative) and its effect on attention well inside the tensor-core bound.
        var q = Random(rng, total * heads * d, 1);
        var k = Random(rng, total * kvHeads * d, 1);
        var v = Random(rng, total * kvHeads * d, 1);
        string shape = $"{rope.Scaling}, {heads}/{kvHeads} heads d {d}, {tokens} tokens from {start}{(onDevice ? " (start on the device)" : "")}";
        (DeviceTensor Q, DeviceTensor K, KvCache Cache) Run(IBackend b)
        {
            b.SetRope(rope, d, total);
            var cache = b.AllocateKvCache(new KvCacheShape(2, kvHeads, d, total));
            var (qt, kt, vt) = (b.Upload(q, total, heads * d), b.Upload(k, total, kvHeads * d), b.Upload(v, total, kvHeads * d));
            if (start > 0)
            {
                b.RopeAppendKv(new AttentionArgs(1, start, 0, heads, kvHeads, d, 1f), qt.Take(start), kt.Take(start), vt.Take(start), cache);
            }
            StepInputs? step = null;
            if (onDevice)
            {
                step = b.AllocateStepInputs(tokens);
                b.WriteStep(step, new int[tokens], start);
            }
            var chunk = new AttentionArgs(1, tokens, start, heads, kvHeads, d, 1f / MathF.Sqrt(d), step);
            b.RopeAppendKv(chunk, qt.Slice(start, tokens), kt.Slice(start, tokens), vt.Slice(start, tokens), cache);
            return (qt, kt, cache);
        }
        yield return Compare("rope + append kv", shape, reference, candidate, (b, _) =>
        {
            var (qt, kt, _) = Run(b);
            return Concatenated(b, [qt, kt]);
        }, []);
        yield return Compare("rope + append kv: cache", shape, reference, candidate, TensorCoreBound, (b, _) =>
        {
            var (qt, _, cache) = Run(b);
            var keys = new float[kvHeads * total * d];
            b.ReadKeys(cache, 1, total, keys);
            var attention = b.Allocate(tokens, heads * d);
            b.Attention(new AttentionArgs(1, tokens, start, heads, kvHeads, d, 1f / MathF.Sqrt(d)), qt.Slice(start, tokens), cache, attention);
            var output = new float[tokens * heads * d];
            b.Read(attention, output);
            return b.Upload([.. keys, .. output], 1, keys.Length + output.Length);
        }, []);
    }

    /// <summary>The tensors' values one after another, as one row on <paramref name="b"/>.</summary>
    private static DeviceTensor Concatenated(IBackend b, IReadOnlyList<DeviceTensor> tensors)
    {
        var all = new List<float>();
        foreach (var t in tensors)
        {
            var values = new float[t.Rows * t.Cols];
            b.Read(t, values);
            all.AddRange(values);
        }
        return b.Upload([.. all], 1, all.Count);
    }
}
