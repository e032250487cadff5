using System.Buffers;
using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>Attention scores as data: the anchors' pooled tile scores (DESIGN §3) and per-head probabilities (analysis).</summary>
public sealed unsafe partial class CpuBackend
{
    public void PooledTileScores(AttentionArgs args, ScorePooling pooling, int pools, DeviceTensor q, KvCache cache, DeviceTensor scores)
    {
        var c = (CpuKvCache)cache;
        var qs = (CpuTensor)q;
        var output = (CpuTensor)scores;
        var tiles = QueryTile.Of(args.StartPosition, args.Tokens);
        args.CheckPools(pools);
        CheckShape(output, tiles.Length * pools, args.StartPosition + args.Tokens, "pooled tile scores");
        Parallel.For(0, tiles.Length * pools, Parallelism, item =>
            PoolTile(args, pooling, c, qs, tiles[item / pools], item % pools, pools, output.Row(item)));
    }

    public void AttentionProbabilities(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor probabilities)
    {
        var c = (CpuKvCache)cache;
        var qs = (CpuTensor)q;
        var output = (CpuTensor)probabilities;
        int d = args.HeadDim, group = args.Heads / args.KvHeads;
        CheckShape(output, args.Tokens * args.Heads, args.StartPosition + args.Tokens, "attention probabilities");
        Parallel.For(0, args.Tokens * args.Heads, Parallelism, item =>
        {
            int t = item / args.Heads, h = item % args.Heads;
            var row = output.Row(item);
            row.Clear();
            var seen = row[..(args.StartPosition + t + 1)];
            ScaledScores(qs.Row(t).Slice(h * d, d), c.Keys[args.Layer], h / group, c.Shape.Capacity, d, args.Scale, seen);
            TensorPrimitives.SoftMax(seen, seen);
        });
    }

    private static void CheckShape(CpuTensor tensor, int rows, int cols, string what)
    {
        if (tensor.Rows != rows || tensor.Cols != cols)
        {
            throw new ArgumentException($"{what} need a [{rows}, {cols}] tensor, not [{tensor.Rows}, {tensor.Cols}]");
        }
    }

    /// <summary>
    /// One tile's scores pooled over one pool of query heads (<c>Heads / pools</c> consecutive heads from
    /// <c>pool · Heads / pools</c>): <paramref name="pooled"/>[j] sums, over the tile's queries and the pool's
    /// heads, each query's probability of key j (or its raw scaled score), 0 where j lies after the query.
    /// </summary>
    private void PoolTile(AttentionArgs args, ScorePooling pooling, CpuKvCache c, CpuTensor qs, QueryTile tile, int pool, int pools, Span<float> pooled)
    {
        int d = args.HeadDim, group = args.Heads / args.KvHeads, capacity = c.Shape.Capacity;
        int heads = args.Heads / pools, firstHead = pool * heads;
        pooled.Clear();
        float[] scratch = ArrayPool<float>.Shared.Rent(tile.QueryEnd);
        try
        {
            for (int h = firstHead; h < firstHead + heads; h++)
            {
                for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
                {
                    // Query `query` sees keys [0, query].
                    var scores = scratch.AsSpan(0, query + 1);
                    ScaledScores(qs.Row(query - args.StartPosition).Slice(h * d, d), c.Keys[args.Layer], h / group, capacity, d, args.Scale, scores);
                    if (pooling == ScorePooling.PostSoftmax)
                    {
                        TensorPrimitives.SoftMax(scores, scores);
                    }
                    TensorPrimitives.Add(pooled[..scores.Length], scores, pooled[..scores.Length]);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// scores[j] = scale · q · K[kvHead, j] for j &lt; scores.Length; <paramref name="keys"/> is one layer of the cache,
    /// <c>[kvHeads, capacity, d]</c> fp32.
    /// </summary>
    private static void ScaledScores(ReadOnlySpan<float> query, float[] keys, int kvHead, int capacity, int d, float scale, Span<float> scores)
    {
        fixed (float* qp = query)
        fixed (float* kp = &keys[kvHead * capacity * d])
        fixed (float* sp = scores)
        {
            Gemm.MultiplyTransposed(1, scores.Length, d, qp, d, kp, d, sp, scores.Length);
        }
        TensorPrimitives.Multiply(scores, scale, scores);
    }
}
