using System.Numerics.Tensors;
using Kascade.Core;
using Kascade.Cpu;
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
    /// The baselines pick their key sets inside the session (<c>BaselineAttention</c>), where this observer cannot see
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
    private static double SumInDouble(ReadOnlySpan<float> values)
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
        int d = _config.HeadDim, group = _config.Group, kvHeads = _config.KvHeads, qWidth = o.Queries.Cols;
        int visible = o.StartPosition + o.Tokens;
        var q = new float[o.Tokens * qWidth];
        var keys = new float[kvHeads * visible * d];
        o.Backend.Read(o.Queries, q);
        o.Backend.ReadKeys(o.Cache, o.Layer, visible, keys);
        var role = _policy.RoleOf(o.Layer);
        bool pooledAll = _policy.Method == AttentionMethod.KascadePooled;
        var tiles = QueryTile.Of(o.StartPosition, o.Tokens);
        var plan = role is LayerRole.Anchor ? new Dictionary<(int, int), int[]>() : _plan;
        var results = new (double Sum, double Worst, double OracleSum, double OracleWorst, long Count)[tiles.Length];
        float scale = _config.AttentionScale;
        Parallel.For(0, tiles.Length, ti =>
        {
            var tile = tiles[ti];
            // P[h, q, :] for every query head and query of the tile.
            var probs = new float[kvHeads * group * tile.Queries][];
            for (int h = 0; h < kvHeads * group; h++)
            {
                for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
                {
                    var s = new float[query + 1];
                    CpuBackend.ScaledScores(q.AsSpan((query - o.StartPosition) * qWidth + h * d, d), keys, h / group, visible, d, scale, s);
                    TensorPrimitives.SoftMax(s, s);
                    probs[h * tile.Queries + query - tile.QueryStart] = s;
                }
            }
            int budget = TopKBudget.For(tile.CandidateEnd, _policy.TopKPercent);
            if (role is LayerRole.Anchor)
            {
                int pools = pooledAll ? 1 : kvHeads;
                for (int g = 0; g < pools; g++)
                {
                    var pooled = new float[tile.CandidateEnd];
                    for (int h = 0; h < kvHeads * group; h++)
                    {
                        if (pooledAll || h / group == g)
                        {
                            for (int i = 0; i < tile.Queries; i++)
                            {
                                TensorPrimitives.Add(pooled, probs[h * tile.Queries + i].AsSpan(0, tile.CandidateEnd), pooled);
                            }
                        }
                    }
                    lock (plan)
                    {
                        plan[(tile.QueryStart, g)] = Ranking.TopK(pooled, budget);
                    }
                }
            }
            var r = (Sum: 0.0, Worst: 1.0, OracleSum: 0.0, OracleWorst: 1.0, Count: 0L);
            for (int h = 0; h < kvHeads * group; h++)
            {
                int g = h / group;
                int row = role switch
                {
                    LayerRole.Reuse reuse => reuse.HeadMap[g],
                    _ => pooledAll ? 0 : g,
                };
                int[] selected;
                lock (plan)
                {
                    selected = role is LayerRole.Dense ? [.. Enumerable.Range(0, tile.CandidateEnd)] : plan[(tile.QueryStart, row)];
                }
                for (int query = tile.QueryStart; query < tile.QueryEnd; query++)
                {
                    var p = probs[h * tile.Queries + query - tile.QueryStart];
                    double diagonal = query >= tile.DiagonalStart ? TensorPrimitives.Sum(p.AsSpan(tile.DiagonalStart)) : 0;
                    double mass = diagonal;
                    if (_policy.Method == AttentionMethod.OracleTopK)
                    {
                        // oracle-topk attends over the query's own Top-k of every visible key (no diagonal tile).
                        mass = TopKSum(p, TopKBudget.For(p.Length, _policy.TopKPercent));
                    }
                    else
                    {
                        foreach (int j in selected)
                        {
                            mass += p[j];
                        }
                    }
                    // Oracle: this query head's own Top-k of the same candidates, plus the same diagonal.
                    double oracle = diagonal + TopKSum(p.AsSpan(0, tile.CandidateEnd), budget);
                    r = (r.Sum + mass, Math.Min(r.Worst, mass), r.OracleSum + oracle, Math.Min(r.OracleWorst, oracle), r.Count + 1);
                }
            }
            results[ti] = r;
        });
        if (role is LayerRole.Anchor)
        {
            _plan = plan;
        }
        foreach (var r in results)
        {
            _sum[o.Layer] += r.Sum;
            _worst[o.Layer] = Math.Min(_worst[o.Layer], r.Worst);
            _oracleSum[o.Layer] += r.OracleSum;
            _oracleWorst[o.Layer] = Math.Min(_oracleWorst[o.Layer], r.OracleWorst);
            _count[o.Layer] += r.Count;
        }
    }
}
