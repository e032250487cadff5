using System.Numerics.Tensors;
using Kascade.Core;
using Kascade.Runtime;

namespace Kascade.Calibration;

/// <summary>Captured attention mass of one layer: mean and worst over every (query head, query) seen.</summary>
public sealed record LayerMass(int Layer, string Role, double KascadeMean, double KascadeWorst, double OracleMean, double OracleWorst, long Queries);

/// <summary>
/// During a dense forward pass, measures for every layer the fraction of its exact post-softmax attention mass that
/// falls on the keys Kascade would let it see (its anchor's Top-k, through the head map, plus the diagonal tile),
/// next to the mass of its own per-query Top-k of the same size (oracle). Dense hidden states throughout, so each
/// layer is judged on the same inputs (the paper's analysis).
/// </summary>
public sealed class AttentionMassAnalyzer : ILayerObserver
{
    private readonly ModelConfig _config;
    private readonly AttentionPolicy _policy;
    private readonly double[] _sum, _worst, _oracleSum, _oracleWorst;
    private readonly long[] _count;
    private Dictionary<(int Tile, int Group), int[]> _plan = [];

    public AttentionMassAnalyzer(ModelConfig config, AttentionPolicy policy)
    {
        _config = config;
        _policy = policy;
        _sum = new double[config.Layers];
        _oracleSum = new double[config.Layers];
        _worst = Enumerable.Repeat(1.0, config.Layers).ToArray();
        _oracleWorst = Enumerable.Repeat(1.0, config.Layers).ToArray();
        _count = new long[config.Layers];
    }

    /// <summary>
    /// The baselines pick their key sets inside the session (<c>BaselineLayers</c>), where this observer cannot see
    /// them: their mass columns are not measured (NaN), only the oracle's.
    /// </summary>
    private bool Unseen => _policy.IsBaseline;

    public IReadOnlyList<LayerMass> Results() => Enumerable.Range(0, _config.Layers).Select(l => new LayerMass(
        l,
        _policy.Method == AttentionMethod.OracleTopK ? "own top-k"
            : Unseen ? "not measured"
            : _policy.RoleOf(l) switch { LayerRole.Anchor => "anchor", LayerRole.Reuse r => $"reuse {r.AnchorLayer} [{string.Join(",", r.HeadMap)}]", _ => "dense" },
        _count[l] > 0 && !Unseen ? _sum[l] / _count[l] : double.NaN,
        Unseen ? double.NaN : _worst[l],
        _count[l] > 0 ? _oracleSum[l] / _count[l] : double.NaN,
        _oracleWorst[l],
        _count[l])).ToArray();

    /// <summary>
    /// Σ <paramref name="values"/> accumulated in double, in index order: the same on every processor (a single-precision
    /// <c>TensorPrimitives.Sum</c> adds in an order set by the vector width, so its last bits differ between AVX2 and
    /// AVX-512 machines).
    /// </summary>
    internal static double SumInDouble(ReadOnlySpan<float> values)
    {
        double sum = 0;
        foreach (float v in values)
        {
            sum += v;
        }
        return sum;
    }

    /// <summary>Sum of the <paramref name="k"/> largest values (quickselect on a copy: O(n), the oracle needs only the mass).</summary>
    public static double TopKSum(ReadOnlySpan<float> values, int k)
    {
        if (k >= values.Length)
        {
            return SumInDouble(values);
        }
        var a = values.ToArray();
        int lo = 0, hi = a.Length - 1, target = k - 1;
        var rng = new Random(a.Length);
        while (lo < hi)
        {
            float pivot = a[rng.Next(lo, hi + 1)];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] > pivot)
                {
                    i++;
                }
                while (a[j] < pivot)
                {
                    j--;
                }
                if (i <= j)
                {
                    (a[i], a[j]) = (a[j], a[i]);
                    i++;
                    j--;
                }
            }
            if (target <= j)
            {
                hi = j;
            }
            else if (target >= i)
            {
                lo = i;
            }
            else
            {
                break;
            }
        }
        return SumInDouble(a.AsSpan(0, k));
    }

    public void OnAttention(LayerObservation o)
    {
        var b = o.Backend;
        int heads = _config.Heads, group = _config.Group, kvHeads = _config.KvHeads;
        var role = _policy.RoleOf(o.Layer);
        bool pooledAll = _policy.Method == AttentionMethod.KascadePooled;
        var tiles = QueryTile.Of(o.StartPosition, o.Tokens);
        var args = new AttentionArgs(o.Layer, o.Tokens, o.StartPosition, heads, kvHeads, _config.HeadDim, _config.AttentionScale);
        if (role is LayerRole.Anchor)
        {
            _plan = Select(b, args, o, tiles, pooledAll ? 1 : kvHeads);
        }
        foreach (var tile in tiles)
        {
            // P[t · heads + h, :] for the tile's queries t: the backend's exact probabilities, one tile at a time so the
            // host copy stays at 32 · heads rows.
            int width = tile.QueryEnd;
            var probs = new float[tile.Queries * heads * width];
            using (var p = b.Allocate(tile.Queries * heads, width))
            {
                b.AttentionProbabilities(args with { Tokens = tile.Queries, StartPosition = tile.QueryStart }, o.Queries.Slice(tile.QueryStart - o.StartPosition, tile.Queries), o.Cache, p);
                b.Read(p, probs);
            }
            int budget = TopKBudget.For(tile.CandidateEnd, _policy.TopKPercent);
            var perHead = new (double Sum, double Worst, double OracleSum, double OracleWorst, long Count)[heads];
            Parallel.For(0, heads, h =>
            {
                int g = h / group;
                int row = role switch
                {
                    LayerRole.Reuse reuse => reuse.HeadMap[g],
                    _ => pooledAll ? 0 : g,
                };
                int[] selected = role is LayerRole.Dense ? [.. Enumerable.Range(0, tile.CandidateEnd)] : _plan[(tile.QueryStart, row)];
                var r = (Sum: 0.0, Worst: 1.0, OracleSum: 0.0, OracleWorst: 1.0, Count: 0L);
                for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
                {
                    var pr = probs.AsSpan(((query - tile.QueryStart) * heads + h) * width, query + 1);
                    double diagonal = query >= tile.DiagonalStart ? SumInDouble(pr[tile.DiagonalStart..]) : 0;
                    double mass = diagonal;
                    if (_policy.Method == AttentionMethod.OracleTopK)
                    {
                        // oracle-topk attends over the query's own Top-k of every visible key (no diagonal tile).
                        mass = TopKSum(pr, TopKBudget.For(pr.Length, _policy.TopKPercent));
                    }
                    else
                    {
                        foreach (int j in selected)
                        {
                            mass += pr[j];
                        }
                    }
                    // Oracle: this query head's own Top-k of the same candidates, plus the same diagonal.
                    double oracle = diagonal + TopKSum(pr[..tile.CandidateEnd], budget);
                    r = (r.Sum + mass, Math.Min(r.Worst, mass), r.OracleSum + oracle, Math.Min(r.OracleWorst, oracle), r.Count + 1);
                }
                perHead[h] = r;
            });
            foreach (var r in perHead)
            {
                _sum[o.Layer] += r.Sum;
                _worst[o.Layer] = Math.Min(_worst[o.Layer], r.Worst);
                _oracleSum[o.Layer] += r.OracleSum;
                _oracleWorst[o.Layer] = Math.Min(_oracleWorst[o.Layer], r.OracleWorst);
                _count[o.Layer] += r.Count;
            }
        }
    }

    /// <summary>An anchor's plan as the policy makes it: the backend's pooled tile scores, the Top-k of each tile's candidates.</summary>
    private Dictionary<(int Tile, int Group), int[]> Select(IBackend b, AttentionArgs args, LayerObservation o, QueryTile[] tiles, int pools)
    {
        int visible = o.StartPosition + o.Tokens;
        var scores = new float[tiles.Length * pools * visible];
        using (var pooled = b.Allocate(tiles.Length * pools, visible))
        {
            b.PooledTileScores(args, _policy.Pooling, pools, o.Queries, o.Cache, pooled);
            b.Read(pooled, scores);
        }
        var plan = new Dictionary<(int, int), int[]>();
        for (int ti = 0; ti < tiles.Length; ti++)
        {
            int candidates = tiles[ti].CandidateEnd;
            int keep = TopKBudget.ForTile(tiles[ti], visible, _policy.TopKPercent, _policy.BudgetRule);
            for (int g = 0; g < pools; g++)
            {
                plan[(tiles[ti].QueryStart, g)] = Ranking.TopK(scores.AsSpan((ti * pools + g) * visible, candidates), keep);
            }
        }
        return plan;
    }
}
