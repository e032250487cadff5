namespace Kascade.Core;

/// <summary>Top-k selection shared by Kascade, the oracle, the baselines and calibration.</summary>
public static class Ranking
{
    /// <summary>
    /// Indices of the <paramref name="k"/> largest scores, descending; equal scores by ascending index, so the
    /// selection is deterministic.
    /// </summary>
    public static int[] TopK(ReadOnlySpan<float> scores, int k)
    {
        int n = scores.Length;
        var keys = new float[n];
        var index = new int[n];
        for (int i = 0; i < n; i++)
        {
            keys[i] = -scores[i];
            index[i] = i;
        }
        keys.AsSpan().Sort(index.AsSpan());
        for (int start = 0; start < Math.Min(k, n);)
        {
            int end = start + 1;
            while (end < n && keys[end] == keys[start])
            {
                end++;
            }
            index.AsSpan(start, end - start).Sort();
            start = end;
        }
        return index[..Math.Min(k, n)];
    }
}
