using Kascade.Core;

namespace Kascade.Cuda;

/// <summary>
/// <see cref="CudaBackend.BatchedDecodeAttention"/> against any reference backend's single-sequence decode, one
/// sequence at a time (the batched path has no <see cref="IBackend"/> counterpart to run the shared parity suite on).
/// </summary>
public static class BatchedDecodeCheck
{
    /// <summary>Largest absolute difference over <paramref name="batch"/> sequences of <paramref name="keys"/> keys.</summary>
    public static double MaxError(IBackend reference, CudaBackend candidate, int batch, int keys, int heads, int kvHeads, int headDim, int seed = 5)
    {
        var rng = new Random(seed);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => DTypes.RoundToBf16((float)(rng.NextDouble() * 2 - 1))).ToArray();
        int kvWidth = kvHeads * headDim, qWidth = heads * headDim;
        var k = Enumerable.Range(0, batch).Select(_ => Random(keys * kvWidth)).ToArray();
        var v = Enumerable.Range(0, batch).Select(_ => Random(keys * kvWidth)).ToArray();
        var q = Random(batch * qWidth);
        var args = new AttentionArgs(0, batch, keys - 1, heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim));

        using var cache = candidate.AllocateKvCache(new KvCacheShape(batch, kvHeads, headDim, keys));
        for (int b = 0; b < batch; b++)
        {
            using var kt = candidate.Upload(k[b], keys, kvWidth);
            using var vt = candidate.Upload(v[b], keys, kvWidth);
            candidate.AppendKv(cache, b, 0, kt, vt);
        }
        using var qt = candidate.Upload(q, batch, qWidth);
        using var output = candidate.Allocate(batch, qWidth);
        candidate.BatchedDecodeAttention(args, qt, cache, output);
        var actual = new float[batch * qWidth];
        candidate.Read(output, actual);

        double worst = 0;
        for (int b = 0; b < batch; b++)
        {
            using var single = reference.AllocateKvCache(new KvCacheShape(1, kvHeads, headDim, keys));
            reference.AppendKv(single, 0, 0, reference.Upload(k[b], keys, kvWidth), reference.Upload(v[b], keys, kvWidth));
            var o = reference.Allocate(1, qWidth);
            reference.Attention(args with { Tokens = 1 }, reference.Upload(q.AsSpan(b * qWidth, qWidth), 1, qWidth), single, o);
            var expected = new float[qWidth];
            reference.Read(o, expected);
            for (int i = 0; i < qWidth; i++)
            {
                worst = Math.Max(worst, Math.Abs(expected[i] - actual[b * qWidth + i]));
            }
        }
        return worst;
    }

}
