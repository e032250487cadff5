using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// <see cref="CudaBackend.TopKRows"/> against <see cref="Ranking.TopK"/> on many rows (<c>wide_topk</c>, or
/// <c>select_topk</c> with the exact kernels) and few long ones (<c>cluster_topk</c>): random scores, scores rounded to
/// a few values (long runs of ties at the k-th), scores on a grid of 1/1024 (a hundred-odd ties of the k-th among keys
/// that share its leading digits, settled by position), tiny post-softmax-like values, scores within one sixteenth of an octave
/// (every key in one bin of <c>wide_topk</c>'s leading digit), scores over many octaves, negative scores and rows of one
/// value. The Top-k kernels have no <see cref="IBackend"/> counterpart, so <c>test-backend</c> runs this beside the shared parity suite.
/// </summary>
public static class TopKRowsCheck
{
    /// <summary>
    /// Rows × columns checked: many rows no longer than <c>wide_topk</c>'s candidate store (12,288), rows just past it,
    /// many longer ones (at 128k the random rows' k-th digit holds about 4,096 candidates, the rounded rows' 13,107 ties
    /// more than it stores, the octave rows' every key until a second digit is counted), and few long rows
    /// (<c>cluster_topk</c> on Hopper: rows short enough to gather whole, rows just past its candidate store, a decode
    /// step's 8 × 128k, ragged slices, and rows whose slices are too long for shared memory, read from the row at each
    /// pass).
    /// </summary>
    public static readonly (int Rows, int Cols)[] Shapes =
        [(300, 9000), (300, 12289), (300, 12800), (512, 40000), (300, 20000), (64, 131072), (8, 50000), (16, 8192), (3, 12289), (8, 131072), (5, 100003), (4, 240007)];

    /// <summary>The kinds of row, by name.</summary>
    public static readonly string[] Kinds = ["random", "rounded", "grid", "tiny", "octave", "spread", "negative", "equal"];

    /// <summary>
    /// Rows of the GPU's Top-k that are not exactly <see cref="Ranking.TopK"/>'s set (ties to the lower position: both
    /// rank the same floats, so the sets must be equal, not merely equal up to ties) — a count other than k, a position
    /// written twice or left unwritten (the plan is filled with −1 first: freed device memory returns with an earlier
    /// run's positions) — plus the positions in one set and not the other, over <paramref name="rows"/> rows of
    /// <paramref name="cols"/> scores of <paramref name="kind"/>, k the budget at <paramref name="percent"/>.
    /// </summary>
    public static int Mismatches(CudaBackend backend, int rows, int cols, double percent, string kind, int seed = 7)
    {
        var rng = new Random(seed);
        float Score() => kind switch
        {
            "random" => (float)(rng.NextDouble() * 2 - 1),
            "rounded" => MathF.Round((float)rng.NextDouble(), 1),
            "grid" => MathF.Round((float)rng.NextDouble() * 1024) / 1024,
            "tiny" => (float)(rng.NextDouble() * 1e-6),
            // Every score in [1, 1.0625): one bin of the leading 12-bit digit (sign, exponent, three mantissa bits), so a
            // long row's candidates fit only after a second digit is counted over the row (wide_topk), or digits that
            // start below the 13 bits the row's keys share (cluster_topk).
            "octave" => 1f + (float)(rng.NextDouble() / 16),
            // e^(6 z), z standard normal: scores over ~80 octaves, spread over hundreds of the leading digit's bins (its
            // exponent and three mantissa bits) where the other kinds crowd into a few.
            "spread" => MathF.Exp(6f * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))),
            // Negative scores (pre-softmax pooling's raw scaled ones): order keys with the sign bit clear, below every
            // positive score's.
            "negative" => -1f - (float)rng.NextDouble(),
            "equal" => 0.5f,
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "a kind of row"),
        };
        var scores = Enumerable.Range(0, rows * cols).Select(_ => Score()).ToArray();
        int k = Math.Min(TopKBudget.For(cols, percent), cols);
        using var tensor = backend.Upload(scores, rows, cols);
        using var plan = (CudaKeyPlan)backend.AllocatePlan(rows, 1, k);
        CudaCheck.ThrowIfFailed(Driver.cuMemsetD8_v2(plan.Indices.Pointer, 0xff, (nuint)plan.Indices.Bytes), "cuMemsetD8");
        CudaCheck.ThrowIfFailed(Driver.cuMemsetD8_v2(plan.Counts.Pointer, 0xff, (nuint)plan.Counts.Bytes), "cuMemsetD8");
        backend.TopKRows(tensor, plan);
        var counts = new int[rows];
        var indices = new int[rows * k];
        backend.ReadPlan(plan, counts, indices);
        int mismatches = 0;
        for (int r = 0; r < rows; r++)
        {
            if (counts[r] != k)
            {
                mismatches++;
                continue;
            }
            var expected = Ranking.TopK(scores.AsSpan(r * cols, cols), k).ToHashSet();
            var written = indices.AsSpan(r * k, k).ToArray();
            var actual = written.ToHashSet();
            mismatches += written.Length - actual.Count + expected.Except(actual).Count() + actual.Except(expected).Count();
        }
        return mismatches;
    }
}
