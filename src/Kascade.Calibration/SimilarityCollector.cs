using System.Numerics.Tensors;
using Kascade.Core;
using Kascade.Runtime;

namespace Kascade.Calibration;

/// <summary>
/// Collects, for every layer and every row (prefill tile or decode step) of one example, each KV head's own
/// pooled Top-k (<see cref="TopK"/> keys before the tile), its pooled post-softmax probabilities over those prior
/// keys, and its diagonal-tile mass (DESIGN §3, calibration); and the layer-importance cosines
/// <c>cos(x_l, x_l + o_l)</c>. <see cref="FinishExample"/> folds an example into the running similarity means.
/// </summary>
public sealed class SimilarityCollector : ILayerObserver
{
    private readonly ModelConfig _config;
    private readonly int _layers;
    private readonly int _kvHeads;
    private readonly List<Row>[] _rows;
    private readonly double[][][][] _simSum;
    private readonly double[] _cosSum;
    private readonly long[] _cosCount;
    private int _examples;

    public SimilarityCollector(ModelConfig config, int topK = 32)
    {
        _config = config;
        _layers = config.Layers;
        _kvHeads = config.KvHeads;
        TopK = topK;
        _rows = Enumerable.Range(0, _layers).Select(_ => new List<Row>()).ToArray();
        _simSum = NewSimilarity(_layers, _kvHeads);
        _cosSum = new double[_layers];
        _cosCount = new long[_layers];
    }

    /// <summary>Keys each layer keeps per row during calibration (the small budget of the paper's calibration).</summary>
    public int TopK { get; }

    public int Examples => _examples;

    /// <summary>One row of one layer: per KV head, the pooled probabilities over prior keys, the own Top-k, and the diagonal mass.</summary>
    private sealed record Row(int Index, float[][] Pooled, int[][] Selected, double[] Diagonal);

    public void OnAttention(LayerObservation o)
    {
        var b = o.Backend;
        int hidden = o.Residual.Cols;
        int visible = o.StartPosition + o.Tokens;
        var x = new float[o.Tokens * hidden];
        var attn = new float[o.Tokens * hidden];
        b.Read(o.Residual, x);
        b.Read(o.AttentionOutput, attn);

        for (int t = 0; t < o.Tokens; t++)
        {
            var xs = x.AsSpan(t * hidden, hidden);
            var sum = new float[hidden];
            TensorPrimitives.Add(xs, attn.AsSpan(t * hidden, hidden), sum);
            _cosSum[o.Layer] += TensorPrimitives.CosineSimilarity(xs, sum);
            _cosCount[o.Layer]++;
        }

        // Each tile's post-softmax probabilities pooled over the tile and each KV head's query heads: the anchors' own op.
        var tiles = QueryTile.Of(o.StartPosition, o.Tokens);
        var args = new AttentionArgs(o.Layer, o.Tokens, o.StartPosition, _config.Heads, _kvHeads, _config.HeadDim, _config.AttentionScale);
        var scores = new float[tiles.Length * _kvHeads * visible];
        using (var pooledScores = b.Allocate(tiles.Length * _kvHeads, visible))
        {
            b.PooledTileScores(args, ScorePooling.PostSoftmax, _kvHeads, o.Queries, o.Cache, pooledScores);
            b.Read(pooledScores, scores);
        }
        var rows = new Row?[tiles.Length];
        Parallel.For(0, tiles.Length, ti =>
        {
            var tile = tiles[ti];
            // A row whose prior keys all fit in the budget carries no information (every ratio is 1).
            if (tile.CandidateEnd <= TopK)
            {
                return;
            }
            var pooled = new float[_kvHeads][];
            var selected = new int[_kvHeads][];
            var diagonal = new double[_kvHeads];
            for (int g = 0; g < _kvHeads; g++)
            {
                var row = scores.AsSpan((ti * _kvHeads + g) * visible, visible);
                pooled[g] = row[..tile.CandidateEnd].ToArray();
                diagonal[g] = AttentionMassAnalyzer.SumInDouble(row[tile.DiagonalStart..tile.QueryEnd]);
                selected[g] = Ranking.TopK(pooled[g], TopK);
            }
            rows[ti] = new Row(tile.QueryStart, pooled, selected, diagonal);
        });
        lock (_rows[o.Layer])
        {
            _rows[o.Layer].AddRange(rows.Where(r => r is not null)!);
        }
    }

    /// <summary>
    /// Folds the current example in: <c>sim[a,b,h_b,h_a] = min over rows of ratio_r</c>, where
    /// <c>ratio_r = (Σ_{i∈I_a[h_a,r]} A_b[h_b,r,i] + D_b[h_b,r]) / (Σ_{i∈I_b[h_b,r]} A_b[h_b,r,i] + D_b[h_b,r])</c>.
    /// </summary>
    public void FinishExample()
    {
        int rowCount = _rows[0].Count;
        if (_rows.Any(r => r.Count != rowCount))
        {
            throw new InvalidOperationException("layers saw different rows");
        }
        var sorted = _rows.Select(r => r.OrderBy(x => x.Index).ToArray()).ToArray();
        Parallel.For(0, _layers, b =>
        {
            for (int a = 0; a < b; a++)
            {
                for (int hb = 0; hb < _kvHeads; hb++)
                {
                    for (int ha = 0; ha < _kvHeads; ha++)
                    {
                        double min = 1;
                        for (int r = 0; r < rowCount; r++)
                        {
                            var rb = sorted[b][r];
                            var ra = sorted[a][r];
                            var pooled = rb.Pooled[hb];
                            double own = rb.Diagonal[hb], other = rb.Diagonal[hb];
                            foreach (int i in rb.Selected[hb])
                            {
                                own += pooled[i];
                            }
                            foreach (int i in ra.Selected[ha])
                            {
                                other += pooled[i];
                            }
                            min = Math.Min(min, own > 0 ? other / own : 1);
                        }
                        _simSum[a][b][hb][ha] += rowCount > 0 ? min : 1;
                    }
                }
            }
        });
        foreach (var r in _rows)
        {
            r.Clear();
        }
        _examples++;
    }

    /// <summary><c>sim[a][b][h_b][h_a]</c> averaged over the examples so far.</summary>
    public double[][][][] Similarity()
    {
        var s = NewSimilarity(_layers, _kvHeads);
        for (int a = 0; a < _layers; a++)
        {
            for (int b = 0; b < _layers; b++)
            {
                for (int hb = 0; hb < _kvHeads; hb++)
                {
                    for (int ha = 0; ha < _kvHeads; ha++)
                    {
                        s[a][b][hb][ha] = _examples > 0 ? _simSum[a][b][hb][ha] / _examples : 0;
                    }
                }
            }
        }
        return s;
    }

    /// <summary>Layer importance <c>w_l = 1 − mean over tokens of cos(x_l, x_l + o_l)</c>.</summary>
    public double[] Importance() => _cosSum.Select((s, l) => _cosCount[l] > 0 ? 1 - s / _cosCount[l] : 0).ToArray();

    private static double[][][][] NewSimilarity(int layers, int kvHeads) =>
        Enumerable.Range(0, layers).Select(_ => Enumerable.Range(0, layers).Select(_ => Enumerable.Range(0, kvHeads).Select(_ => new double[kvHeads]).ToArray()).ToArray()).ToArray();
}
