using System.Buffers;

namespace Kascade.Core;

/// <summary>Top-k selection shared by Kascade, the oracle, the baselines and calibration.</summary>
public static class Ranking
{
    /// <summary>
    /// Indices of the <paramref name="k"/> largest scores, descending; equal scores by ascending index, so the
    /// selection is deterministic.
    /// </summary>
    /// <remarks>
    /// The k-th largest score is found by selection on a copy (expected O(n)), so only the k chosen indices are
    /// sorted: the per-query oracle ranks every row of a long prompt, where a full sort of each row dominated.
    /// </remarks>
    public static int[] TopK(ReadOnlySpan<float> scores, int k)
    {
        int n = scores.Length;
        k = Math.Min(k, n);
        if (k <= 0)
        {
            return [];
        }
        float threshold = KthLargest(scores, k);
        var chosen = new int[k];
        int m = 0;
        for (int i = 0; i < n; i++)
        {
            if (scores[i] > threshold)
            {
                chosen[m++] = i;
            }
        }
        for (int i = 0; i < n && m < k; i++)
        {
            if (scores[i] == threshold)
            {
                chosen[m++] = i;
            }
        }
        var keys = new float[k];
        for (int i = 0; i < k; i++)
        {
            keys[i] = -scores[chosen[i]];
        }
        keys.AsSpan().Sort(chosen.AsSpan());
        for (int start = 0; start < k;)
        {
            int end = start + 1;
            while (end < k && keys[end] == keys[start])
            {
                end++;
            }
            chosen.AsSpan(start, end - start).Sort();
            start = end;
        }
        return chosen;
    }

    /// <summary>
    /// The <paramref name="k"/>-th largest of <paramref name="scores"/> (1 ≤ k ≤ length): the Top-k set is every score
    /// above it plus, in ascending index order, as many scores equal to it as fill k.
    /// </summary>
    public static float KthLargest(ReadOnlySpan<float> scores, int k)
    {
        int n = scores.Length;
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, n);
        float[] work = ArrayPool<float>.Shared.Rent(n);
        try
        {
            scores.CopyTo(work);
            return NthSmallest(work.AsSpan(0, n), n - k);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(work);
        }
    }

    /// <summary>The value that would sit at index <paramref name="nth"/> if <paramref name="values"/> were sorted ascending (Hoare selection, median of three; reorders the span).</summary>
    private static float NthSmallest(Span<float> values, int nth)
    {
        int lo = 0, hi = values.Length - 1;
        while (hi > lo)
        {
            int mid = lo + ((hi - lo) >> 1);
            float a = values[lo], b = values[mid], c = values[hi];
            float pivot = Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));
            int i = lo, j = hi;
            while (i <= j)
            {
                while (values[i] < pivot)
                {
                    i++;
                }
                while (values[j] > pivot)
                {
                    j--;
                }
                if (i <= j)
                {
                    (values[i], values[j]) = (values[j], values[i]);
                    i++;
                    j--;
                }
            }
            if (nth <= j)
            {
                hi = j;
            }
            else if (nth >= i)
            {
                lo = i;
            }
            else
            {
                return values[nth];
            }
        }
        return values[lo];
    }
}
