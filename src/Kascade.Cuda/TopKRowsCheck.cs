using Kascade.Core;

namespace Kascade.Cuda;

/// <summary>
/// <see cref="CudaBackend.TopKRows"/> against <see cref="Ranking.TopK"/> on many rows (<c>wide_topk</c>, or
/// <c>select_topk</c> with the exact kernels) and few long ones (<c>cluster_topk</c>): random scores, scores rounded to a few values (long runs of ties at the k-th), tiny
/// post-softmax-like values and rows of one value. The Top-k kernels have no <see cref="IBackend"/> counterpart, so
/// <c>test-backend</c> runs this beside the shared parity suite.
/// </summary>
public static class TopKRowsCheck
{
    /// <summary>
    /// Rows × columns checked: many rows no longer than <c>wide_topk</c>'s candidate store (12,288), many longer ones (at
    /// 128k the random rows' k-th digit holds about 4,096 candidates, the rounded rows' 13,107 ties more than it stores),
    /// and few long rows (<c>cluster_topk</c> on Hopper).
    /// </summary>
    public static readonly (int Rows, int Cols)[] Shapes = [(300, 9000), (512, 40000), (300, 20000), (64, 131072), (8, 50000)];

    /// <summary>The kinds of row, by name.</summary>
    public static readonly string[] Kinds = ["random", "rounded", "tiny", "equal"];

    /// <summary>
    /// Positions in a GPU row's set and not the reference's (or the reverse) that a tie with the k-th largest score does
    /// not explain, over <paramref name="rows"/> rows of <paramref name="cols"/> scores of <paramref name="kind"/>, k the
    /// budget at <paramref name="percent"/>.
    /// </summary>
    public static int Mismatches(CudaBackend backend, int rows, int cols, double percent, string kind, int seed = 7)
    {
        var rng = new Random(seed);
        float Score() => kind switch
        {
            "random" => (float)(rng.NextDouble() * 2 - 1),
            "rounded" => MathF.Round((float)rng.NextDouble(), 1),
            "tiny" => (float)(rng.NextDouble() * 1e-6),
            "equal" => 0.5f,
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "a kind of row"),
        };
        var scores = Enumerable.Range(0, rows * cols).Select(_ => Score()).ToArray();
        int k = Math.Min(TopKBudget.For(cols, percent), cols);
        using var tensor = backend.Upload(scores, rows, cols);
        using var plan = backend.AllocatePlan(rows, 1, k);
        backend.TopKRows(tensor, plan);
        var counts = new int[rows];
        var indices = new int[rows * k];
        backend.ReadPlan(plan, counts, indices);
        int mismatches = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = scores.AsSpan(r * cols, cols).ToArray();
            var expected = Ranking.TopK(row, k);
            float kth = expected.Min(i => row[i]);
            var a = expected.ToHashSet();
            var b = indices.AsSpan(r * k, counts[r]).ToArray().ToHashSet();
            mismatches += counts[r] == k ? 0 : 1;
            mismatches += a.Except(b).Concat(b.Except(a)).Count(i => i < 0 || i >= cols || row[i] != kth);
        }
        return mismatches;
    }
}
