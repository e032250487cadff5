using System.Buffers;
using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>Kascade on the CPU: the reference every later kernel is checked against (DESIGN §3).</summary>
public sealed unsafe partial class CpuBackend
{
    public KeyPlan AllocatePlan(int units, int selectors, int capacity, PlanUnit unit = PlanUnit.Tile) => new CpuKeyPlan(units, selectors, capacity, unit);

    public void AnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output)
    {
        var p = (CpuKeyPlan)plan;
        var tiles = QueryTile.Of(args.StartPosition, args.Tokens);
        int selectors = selection.PoolAllHeads ? 1 : args.KvHeads;
        if (p.Selectors != selectors || tiles.Length > p.Units)
        {
            throw new ArgumentException($"a plan of {p.Units} tiles × {p.Selectors} selectors cannot hold {tiles.Length} tiles × {selectors}");
        }
        using var scores = (CpuTensor)Allocate(tiles.Length * selectors, args.StartPosition + args.Tokens);
        using var scoringQuery = ScoringQuery((CpuTensor)q, selection.Precision);
        PooledTileScores(args, selection.Pooling, selectors, scoringQuery ?? q, cache, scores);
        Parallel.For(0, tiles.Length * selectors, Parallelism, row =>
        {
            // Candidates are the keys before the tile's diagonal block; the diagonal is always attended.
            var tile = tiles[row / selectors];
            int keep = TopKBudget.ForTile(tile, args.StartPosition + args.Tokens, selection.TopKPercent, selection.Rule);
            p.Write(row, Ranking.TopK(scores.Row(row)[..tile.CandidateEnd], keep));
        });
        p.Serve(args, args.Tokens, recording: false);
        if (selection.DenseOutput)
        {
            Attention(args, q, cache, output);
        }
        else
        {
            SparseAttention(args, plan, Enumerable.Range(0, args.KvHeads).Select(g => selection.PoolAllHeads ? 0 : g).ToArray(), q, cache, output);
        }
    }

    /// <summary>
    /// The query an anchor scores with at <paramref name="precision"/>: null for the fp32 query itself, else a copy of
    /// <paramref name="q"/> (fp32 <c>[tokens, heads · headDim]</c>) with each element rounded to bf16 (to nearest even).
    /// </summary>
    private CpuTensor? ScoringQuery(CpuTensor q, ScorePrecision precision)
    {
        if (precision == ScorePrecision.Exact)
        {
            return null;
        }
        var rounded = (CpuTensor)Allocate(q.Rows, q.Cols);
        for (int row = 0; row < q.Rows; row++)
        {
            DTypes.RoundToBf16(q.Row(row), rounded.Row(row));
        }
        return rounded;
    }

    public void ExtendPlan(AttentionArgs args, KeyPlan plan)
    {
        var p = (CpuKeyPlan)plan;
        int position = CpuStepInputs.Start(args.Step, args.StartPosition);
        p.CheckExtend(args);
        for (int row = 0; row < p.Rows; row++)
        {
            p.Append(row, position);
        }
        p.Serve(args, 1, recording: false);
    }

    public void ReadPlan(KeyPlan plan, Span<int> counts, Span<int> indices)
    {
        var p = (CpuKeyPlan)plan;
        for (int row = 0; row < counts.Length; row++)
        {
            var positions = p.Row(row);
            counts[row] = positions.Length;
            positions.CopyTo(indices.Slice(row * p.Capacity, p.Capacity));
        }
    }

    public void WritePlan(AttentionArgs args, KeyPlan plan, ReadOnlySpan<int> counts, ReadOnlySpan<int> indices)
    {
        var p = (CpuKeyPlan)plan;
        p.CheckWrite(args, counts, indices);
        for (int row = 0; row < counts.Length; row++)
        {
            p.Write(row, indices.Slice(row * p.Capacity, counts[row]).ToArray());
        }
        p.Serve(args, args.Tokens, recording: false);
    }

    public void SparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var p = (CpuKeyPlan)plan;
        p.CheckServes(args);
        var rowOf = p.SelectorOfHead(args.Heads, args.KvHeads, headMap);
        var c = (CpuKvCache)cache;
        var qs = (CpuTensor)q;
        var os = (CpuTensor)output;
        int d = args.HeadDim, group = args.Heads / args.KvHeads;
        if (p.Unit == PlanUnit.Token && args.Tokens > 1)
        {
            Parallel.For(0, args.Tokens * args.Heads, Parallelism, item =>
            {
                int t = item / args.Heads, head = item % args.Heads;
                AttendOver(qs.Row(t).Slice(head * d, d), c, args.Layer, head / group, args.Scale, p.Row(t * p.Selectors + rowOf[head]), os.Row(t).Slice(head * d, d));
            });
            return;
        }
        // Heads that read one row attend as a block: a KV head's group under a per-KV-head map, else one head.
        int headsPerBlock = headMap.Count == args.KvHeads ? group : 1, blocks = args.Heads / headsPerBlock;
        var tiles = QueryTile.Of(args.StartPosition, args.Tokens);
        Parallel.For(0, tiles.Length * blocks, Parallelism, item =>
        {
            int unit = item / blocks, firstHead = item % blocks * headsPerBlock;
            SparseTile(args, c, qs, os, tiles[unit], firstHead, headsPerBlock, p.Row(unit * p.Selectors + rowOf[firstHead]));
        });
    }

    /// <summary>
    /// Each query attends to its own Top-k keys by post-softmax probability (§3's oracle): a dense pass whose rows
    /// keep only their Top-k probabilities, renormalised, which equals a softmax over those keys alone.
    /// </summary>
    public void OracleTopKAttention(AttentionArgs args, double topKPercent, DeviceTensor q, KvCache cache, DeviceTensor output) =>
        AttentionRows(args, q, cache, output, probabilities =>
        {
            // The Top-k set of Ranking.TopK (ties to the lower position), found without sorting it.
            int k = Math.Min(TopKBudget.For(probabilities.Length, topKPercent), probabilities.Length);
            float threshold = Ranking.KthLargest(probabilities, k), sum = 0;
            int equalKept = k;
            foreach (float p in probabilities)
            {
                equalKept -= p > threshold ? 1 : 0;
            }
            for (int i = 0; i < probabilities.Length; i++)
            {
                float p = probabilities[i];
                if (p > threshold || (p == threshold && equalKept-- > 0))
                {
                    sum += p;
                }
                else
                {
                    probabilities[i] = 0;
                }
            }
            TensorPrimitives.Divide(probabilities, sum, probabilities);
        });

    /// <summary>
    /// output = softmax over <paramref name="positions"/> of scale · query · K[j], times V[j]: one query head over a
    /// gathered key set (a token plan's row). An empty set gives zeros.
    /// </summary>
    private static void AttendOver(ReadOnlySpan<float> query, CpuKvCache c, int layer, int kvHead, float scale, ReadOnlySpan<int> positions, Span<float> output)
    {
        int d = query.Length, capacity = c.Shape.Capacity, m = positions.Length;
        output.Clear();
        if (m == 0)
        {
            return;
        }
        float[] rented = ArrayPool<float>.Shared.Rent(m);
        try
        {
            var scores = rented.AsSpan(0, m);
            var keys = c.Keys[layer];
            for (int i = 0; i < m; i++)
            {
                scores[i] = scale * TensorPrimitives.Dot(query, keys.AsSpan((kvHead * capacity + positions[i]) * d, d));
            }
            TensorPrimitives.SoftMax(scores, scores);
            var valuesT = c.ValuesTransposed[layer];
            for (int e = 0; e < d; e++)
            {
                int row = (kvHead * d + e) * capacity;
                float acc = 0;
                for (int i = 0; i < m; i++)
                {
                    acc += scores[i] * valuesT[row + positions[i]];
                }
                output[e] = acc;
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    public void ReadKeys(KvCache cache, int layer, int count, Span<float> destination)
    {
        var c = (CpuKvCache)cache;
        int d = c.Shape.HeadDim;
        for (int h = 0; h < c.Shape.KvHeads; h++)
        {
            c.Keys[layer].AsSpan(h * c.Shape.Capacity * d, count * d).CopyTo(destination.Slice(h * count * d, count * d));
        }
    }

    /// <summary>
    /// <paramref name="heads"/> query heads from <paramref name="firstHead"/> (of one KV head) over one tile, restricted to
    /// <paramref name="selected"/> plus the tile's diagonal keys (causal within the tile): softmax over exactly those keys.
    /// </summary>
    private void SparseTile(AttentionArgs args, CpuKvCache c, CpuTensor qs, CpuTensor os, QueryTile tile, int firstHead, int heads, ReadOnlySpan<int> selected)
    {
        int d = args.HeadDim, kvHead = firstHead / (args.Heads / args.KvHeads), capacity = c.Shape.Capacity;
        int diagonal = tile.QueryEnd - tile.DiagonalStart;
        int m = selected.Length + Math.Max(0, diagonal);
        int rows = tile.Queries * heads;
        float[] kSel = ArrayPool<float>.Shared.Rent(m * d);
        float[] vSelT = ArrayPool<float>.Shared.Rent(d * m);
        float[] qBlock = ArrayPool<float>.Shared.Rent(rows * d);
        float[] scores = ArrayPool<float>.Shared.Rent(rows * m);
        float[] oBlock = ArrayPool<float>.Shared.Rent(rows * d);
        try
        {
            var keys = c.Keys[args.Layer];
            var valuesT = c.ValuesTransposed[args.Layer];
            for (int i = 0; i < m; i++)
            {
                int pos = i < selected.Length ? selected[i] : tile.DiagonalStart + (i - selected.Length);
                keys.AsSpan((kvHead * capacity + pos) * d, d).CopyTo(kSel.AsSpan(i * d));
                for (int e = 0; e < d; e++)
                {
                    vSelT[e * m + i] = valuesT[(kvHead * d + e) * capacity + pos];
                }
            }
            for (int t = 0; t < tile.Queries; t++)
            {
                qs.Row(tile.QueryStart - args.StartPosition + t).Slice(firstHead * d, heads * d).CopyTo(qBlock.AsSpan(t * heads * d));
            }
            fixed (float* qp = qBlock, kp = kSel, vp = vSelT, sp = scores, op = oBlock)
            {
                Gemm.MultiplyTransposed(rows, m, d, qp, d, kp, d, sp, m);
                for (int r = 0; r < rows; r++)
                {
                    int query = tile.QueryStart + r / heads;
                    var row = new Span<float>(sp + (long)r * m, m);
                    TensorPrimitives.Multiply(row, args.Scale, row);
                    // Diagonal keys after the query are in the future: mask them out.
                    int live = selected.Length + Math.Max(0, query - tile.DiagonalStart + 1);
                    TensorPrimitives.SoftMax(row[..live], row[..live]);
                    row[live..].Clear();
                }
                Gemm.MultiplyTransposed(rows, d, m, sp, m, vp, m, op, d);
            }
            for (int t = 0; t < tile.Queries; t++)
            {
                oBlock.AsSpan(t * heads * d, heads * d).CopyTo(os.Row(tile.QueryStart - args.StartPosition + t).Slice(firstHead * d, heads * d));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kSel);
            ArrayPool<float>.Shared.Return(vSelT);
            ArrayPool<float>.Shared.Return(qBlock);
            ArrayPool<float>.Shared.Return(scores);
            ArrayPool<float>.Shared.Return(oBlock);
        }
    }
}
