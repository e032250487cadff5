using Kascade.Core;

namespace Kascade.Calibration;

/// <summary>
/// The anchor DP of DESIGN §3. With <c>W[a][b] = S[a][b] · w_b</c>, an anchor at layer l that covers layers
/// <c>l..i−1</c> scores <c>W[l][l] + Σ_{j=l+1}^{i−1} W[l][j]</c>; <c>V[k][i]</c> is the best score covering layers
/// <c>0..i−1</c> with k anchors, the first forced to layer 0. Prefix sums make a segment O(1), the DP O(K·N²).
/// </summary>
public static class AnchorSelection
{
    /// <summary>Smallest similarity <see cref="AnchorObjective.LogWeighted"/> takes the logarithm of (a layer no anchor predicts at all).</summary>
    public const double LogFloor = 1e-4;

    /// <summary>
    /// The N×N matrix the DP sums for <paramref name="objective"/>: <c>W[a][b]</c> is what anchor a covering layer b
    /// scores, from layer similarity <c>S[a][b]</c> and importance <c>w_b</c>.
    /// </summary>
    public static double[][] Objective(double[][] similarity, IReadOnlyList<double> importance, AnchorObjective objective) =>
        [.. similarity.Select(row => row.Select((s, b) => importance[b] * (objective == AnchorObjective.Weighted ? s : Math.Log(Math.Max(s, LogFloor)))).ToArray())];

    /// <summary>Best anchors (ascending, starting at 0) for <paramref name="anchors"/> anchors over an N×N weighted matrix, and their score.</summary>
    public static (int[] Anchors, double Score) Solve(double[][] weighted, int anchors)
    {
        if (anchors < 1 || anchors > weighted.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(anchors), $"{anchors} anchors for {weighted.Length} layers");
        }
        return SolveUpTo(weighted, anchors)[anchors - 1];
    }

    /// <summary>
    /// One DP for every anchor count from 1 to <paramref name="maxAnchors"/> (<c>V[k][N]</c> does not depend on the
    /// largest k asked for), each count's anchors backtracked from the same table.
    /// </summary>
    private static (int[] Anchors, double Score)[] SolveUpTo(double[][] weighted, int maxAnchors)
    {
        int n = weighted.Length;
        // prefix[l][i] = Σ_{j=l}^{i-1} W[l][j]: the score of anchor l covering l..i−1.
        var prefix = new double[n][];
        for (int l = 0; l < n; l++)
        {
            prefix[l] = new double[n + 1];
            for (int i = l + 1; i <= n; i++)
            {
                prefix[l][i] = prefix[l][i - 1] + weighted[l][i - 1];
            }
        }
        var value = new double[maxAnchors + 1, n + 1];
        var from = new int[maxAnchors + 1, n + 1];
        for (int k = 0; k <= maxAnchors; k++)
        {
            for (int i = 0; i <= n; i++)
            {
                value[k, i] = double.NegativeInfinity;
            }
        }
        for (int i = 1; i <= n; i++)
        {
            value[1, i] = prefix[0][i];
        }
        for (int k = 2; k <= maxAnchors; k++)
        {
            for (int i = k; i <= n; i++)
            {
                for (int l = k - 1; l < i; l++)
                {
                    double v = value[k - 1, l] + prefix[l][i];
                    if (v > value[k, i])
                    {
                        value[k, i] = v;
                        from[k, i] = l;
                    }
                }
            }
        }
        var solutions = new (int[] Anchors, double Score)[maxAnchors];
        for (int anchors = 1; anchors <= maxAnchors; anchors++)
        {
            var result = new int[anchors];
            for (int k = anchors, i = n; k >= 1; k--)
            {
                int l = k == 1 ? 0 : from[k, i];
                result[k - 1] = l;
                i = l;
            }
            solutions[anchors - 1] = (result, value[anchors, n]);
        }
        return solutions;
    }

    /// <summary>
    /// The DP's best anchors for every count from 1 to N (layer 0 always first), each with its score and the
    /// similarity of its weakest covered layer (<see cref="WeakestCovered"/>): the whole score curve.
    /// </summary>
    public static AnchorChoice[] SolveAll(double[][] weighted, double[][] similarity) =>
        SolveUpTo(weighted, weighted.Length)
            .Select((solution, i) => new AnchorChoice(i + 1, solution.Anchors, solution.Score, WeakestCovered(similarity, solution.Anchors)))
            .ToArray();

    /// <summary>
    /// <c>min over reuse layers j of S[anchor(j)][j]</c>, anchor(j) the nearest anchor at or before j: how well the
    /// worst-served layer's keys are predicted by the anchor it reuses. 1 when every layer is an anchor.
    /// </summary>
    public static double WeakestCovered(double[][] similarity, IReadOnlyList<int> anchors)
    {
        double weakest = 1;
        for (int a = 0; a < anchors.Count; a++)
        {
            int end = a + 1 < anchors.Count ? anchors[a + 1] : similarity.Length;
            for (int j = anchors[a] + 1; j < end; j++)
            {
                weakest = Math.Min(weakest, similarity[anchors[a]][j]);
            }
        }
        return weakest;
    }

    /// <summary>
    /// <c>--anchors auto</c>: the fewest anchors whose DP choice serves every layer at <paramref name="target"/> or
    /// better (<see cref="AnchorChoice.WeakestSimilarity"/> ≥ target). Every layer an anchor always qualifies.
    /// </summary>
    public static AnchorChoice Auto(IReadOnlyList<AnchorChoice> choices, double target) =>
        choices.OrderBy(c => c.AnchorCount).FirstOrDefault(c => c.WeakestSimilarity >= target) ?? choices.MaxBy(c => c.AnchorCount)!;

    /// <summary>The score of a given anchor set (for checking the DP against enumeration).</summary>
    public static double Score(double[][] weighted, IReadOnlyList<int> anchors)
    {
        double total = 0;
        for (int a = 0; a < anchors.Count; a++)
        {
            int end = a + 1 < anchors.Count ? anchors[a + 1] : weighted.Length;
            for (int j = anchors[a]; j < end; j++)
            {
                total += weighted[anchors[a]][j];
            }
        }
        return total;
    }
}

/// <summary>Head maps: each KV head of a reuse layer reads the anchor head its attention is most similar to.</summary>
public static class HeadMaps
{
    /// <summary>
    /// <c>headMap[j][h_b] = argmax_{h_a} sim[anchor(j), j, h_b, h_a]</c> (ties to the lower head); anchor layers get the identity.
    /// <paramref name="similarity"/> is indexed <c>[a][b][h_b][h_a]</c>, defined for a &lt; b.
    /// </summary>
    public static int[][] Build(double[][][][] similarity, IReadOnlyList<int> anchors, int layers, int kvHeads)
    {
        var map = new int[layers][];
        int anchor = 0;
        for (int j = 0; j < layers; j++)
        {
            if (anchors.Contains(j))
            {
                anchor = j;
                map[j] = Enumerable.Range(0, kvHeads).ToArray();
                continue;
            }
            map[j] = new int[kvHeads];
            for (int hb = 0; hb < kvHeads; hb++)
            {
                var row = similarity[anchor][j][hb];
                int best = 0;
                for (int ha = 1; ha < kvHeads; ha++)
                {
                    if (row[ha] > row[best])
                    {
                        best = ha;
                    }
                }
                map[j][hb] = best;
            }
        }
        return map;
    }

    /// <summary><c>S[a][b] = mean_{h_b} max_{h_a} sim[a,b,h_b,h_a]</c>, <c>S[l][l] = 1</c>, 0 below the diagonal.</summary>
    public static double[][] LayerSimilarity(double[][][][] similarity, int layers)
    {
        var s = new double[layers][];
        for (int a = 0; a < layers; a++)
        {
            s[a] = new double[layers];
            s[a][a] = 1;
            for (int b = a + 1; b < layers; b++)
            {
                s[a][b] = similarity[a][b].Average(row => row.Max());
            }
        }
        return s;
    }
}
