namespace Kascade.Cuda.Heuristics;

/// <summary>Which attention kernel runs a call, and its split of the keys (pure: shapes in, plan out).</summary>
public readonly record struct AttentionLaunchPlan(bool SplitKv, int Splits, int KeysPerSplit);

public static class AttentionLaunch
{
    /// <summary>Keys one split walks at least: below this a split's fixed cost dominates.</summary>
    public const int MinKeysPerSplit = 128;

    /// <summary>
    /// Few query warps (decode, short chunks) cannot fill the GPU by themselves: split the keys so that the grid
    /// has about eight 4-warp blocks per multiprocessor, enough loads in flight to stream the cache at full
    /// bandwidth. Many query warps (prefill) run one warp per query head.
    /// </summary>
    public static AttentionLaunchPlan Choose(int tokens, int heads, int kvHeads, int visibleKeys, int multiprocessors)
    {
        int queryWarps = tokens * heads;
        if (queryWarps >= 16 * multiprocessors)
        {
            return new AttentionLaunchPlan(false, 1, visibleKeys);
        }
        int wanted = Math.Max(1, 8 * multiprocessors / Math.Max(1, tokens * kvHeads));
        int splits = Math.Clamp(Math.Min(wanted, visibleKeys / MinKeysPerSplit), 1, 1024);
        int perSplit = (visibleKeys + splits - 1) / splits;
        return new AttentionLaunchPlan(true, (visibleKeys + perSplit - 1) / perSplit, perSplit);
    }
}
