using Kascade.Core;

namespace Kascade.Testing;

/// <summary>
/// Kascade attention for one layer and one chunk written from DESIGN §3 in double precision, with plain loops:
/// the reference the CPU backend's anchor and reuse paths are checked against.
/// Layouts: q <c>[tokens][heads·d]</c>, keys and values <c>[positions][kvHeads·d]</c> (every position up to the chunk's end).
/// </summary>
public static class NaiveKascade
{
    /// <summary>The selected positions per (tile, pool), descending pooled score, ties by position, with the pooled scores.</summary>
    public static List<(int[] Rows, double[] Pooled)> Select(double[][] q, double[][] keys, int start, int heads, int kvHeads, int d, double percent, ScorePooling pooling, bool poolAllHeads)
    {
        int group = heads / kvHeads, pools = poolAllHeads ? 1 : kvHeads;
        var rows = new List<(int[], double[])>();
        foreach (var tile in QueryTile.Of(start, q.Length))
        {
            for (int pool = 0; pool < pools; pool++)
            {
                var pooled = new double[tile.CandidateEnd];
                for (int h = 0; h < heads; h++)
                {
                    if (!poolAllHeads && h / group != pool)
                    {
                        continue;
                    }
                    for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
                    {
                        var s = Scores(q[query - start], keys, h, h / group, d, query + 1);
                        var p = pooling == ScorePooling.PostSoftmax ? Softmax(s) : s;
                        for (int j = 0; j < tile.CandidateEnd; j++)
                        {
                            pooled[j] += p[j];
                        }
                    }
                }
                int k = TopKBudget.For(tile.CandidateEnd, percent);
                rows.Add((Enumerable.Range(0, tile.CandidateEnd).OrderByDescending(j => pooled[j]).ThenBy(j => j).Take(k).ToArray(), pooled));
            }
        }
        return rows;
    }

    /// <summary>Output <c>[tokens][heads·d]</c>: KV head g of tile t attends over <c>rows[t·pools + map[g]]</c> plus the causal diagonal.</summary>
    public static double[][] Attend(double[][] q, double[][] keys, double[][] values, int start, int heads, int kvHeads, int d, IReadOnlyList<int[]> rows, int pools, IReadOnlyList<int> map)
    {
        int group = heads / kvHeads;
        var output = q.Select(_ => new double[heads * d]).ToArray();
        var tiles = QueryTile.Of(start, q.Length);
        for (int t = 0; t < tiles.Length; t++)
        {
            var tile = tiles[t];
            for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int g = h / group;
                    var set = rows[t * pools + map[g]].Concat(Enumerable.Range(tile.DiagonalStart, Math.Max(0, query - tile.DiagonalStart + 1))).ToArray();
                    var all = Scores(q[query - start], keys, h, g, d, query + 1);
                    var s = set.Select(j => all[j]).ToArray();
                    var p = Softmax(s);
                    for (int i = 0; i < set.Length; i++)
                    {
                        for (int e = 0; e < d; e++)
                        {
                            output[query - start][h * d + e] += p[i] * values[set[i]][g * d + e];
                        }
                    }
                }
            }
        }
        return output;
    }

    /// <summary>Scaled scores of query head <paramref name="h"/> against keys <c>[0, count)</c> of KV head <paramref name="g"/>.</summary>
    public static double[] Scores(double[] q, double[][] keys, int h, int g, int d, int count)
    {
        var s = new double[count];
        for (int j = 0; j < count; j++)
        {
            for (int e = 0; e < d; e++)
            {
                s[j] += q[h * d + e] * keys[j][g * d + e];
            }
            s[j] /= Math.Sqrt(d);
        }
        return s;
    }

    public static double[] Softmax(double[] s)
    {
        double max = s.Max();
        var e = s.Select(x => Math.Exp(x - max)).ToArray();
        double z = e.Sum();
        return e.Select(x => x / z).ToArray();
    }
}
