namespace Kascade.Cuda.Heuristics;

/// <summary>
/// The launch of <c>attention_mma</c> for one call (pure: shapes in, plan out). <see cref="Warps"/> warps of 16 rows
/// make a block's row tile; <see cref="RowTiles"/> tiles cover the rows (query tokens × GQA group) of one KV head of
/// one sequence; the keys are cut into <see cref="Splits"/> ranges of <see cref="KeysPerSplit"/> (a whole number of
/// key tiles), merged by <c>attention_combine</c> when there is more than one.
/// </summary>
public readonly record struct AttentionLaunchPlan(int Warps, int RowTiles, int Splits, int KeysPerSplit)
{
    public int Threads => 32 * Warps;

    /// <summary>Shared memory of a block: one K and one V tile, rows padded by 8 bf16.</summary>
    public static int SharedBytes(int headDim) => 2 * AttentionLaunch.KeyTile * (headDim + 8) * sizeof(ushort);
}

public static class AttentionLaunch
{
    /// <summary>Keys a block stages in shared memory at a time (KV_TILE in attention.cu).</summary>
    public const int KeyTile = 64;

    /// <summary>Keys one split walks at least: two tiles, so that a split overlaps loading with computing.</summary>
    public const int MinKeysPerSplit = 2 * KeyTile;

    /// <summary>
    /// Rows per block grow with the rows there are (up to 8 warps = 128 rows, where one K/V tile feeds the most
    /// tensor-core work). The keys are then split (flash-decoding) as far as that shortens the launch: a launch takes
    /// about (waves of resident blocks) × (keys per split), where up to 8 warps per multiprocessor are resident as
    /// shared memory allows. Decode fills one whole wave with as many splits as there are slots; a batch of sequences
    /// takes the split count whose last wave is fullest (64 sequences × 8 KV heads on an H100: 3 splits, 1.94 waves).
    /// </summary>
    public static AttentionLaunchPlan Choose(int tokens, int group, int kvHeads, int sequences, int visibleKeys, int headDim, int multiprocessors, int sharedMemoryPerMultiprocessor)
    {
        int rows = tokens * group;
        int warps = Math.Min(8, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)((rows + 15) / 16)));
        int rowTiles = (rows + 16 * warps - 1) / (16 * warps);
        long blocks = (long)rowTiles * kvHeads * sequences;
        int resident = Math.Max(1, Math.Min(8 / warps, sharedMemoryPerMultiprocessor / (AttentionLaunchPlan.SharedBytes(headDim) + ReservedSharedBytes)));
        long capacity = (long)multiprocessors * resident;
        int maxSplits = Math.Clamp(visibleKeys / MinKeysPerSplit, 1, 1024);
        int splits = 1;
        double best = double.MaxValue;
        for (int s = 1; s <= maxSplits; s++)
        {
            double cost = (double)((blocks * s + capacity - 1) / capacity) * ((double)visibleKeys / s + BlockCostInKeys);
            if (cost < best - 1e-12)
            {
                (best, splits) = (cost, s);
            }
        }
        int perSplit = (visibleKeys + splits - 1) / splits;
        perSplit = (perSplit + KeyTile - 1) / KeyTile * KeyTile;
        return new AttentionLaunchPlan(warps, rowTiles, (visibleKeys + perSplit - 1) / perSplit, perSplit);
    }

    /// <summary>A block's fixed cost (its queries, the first tile's latency, its output rows) in keys walked: two tiles.</summary>
    private const int BlockCostInKeys = 2 * KeyTile;

    /// <summary>Shared memory the driver keeps per block (1 KiB on sm_80 and later).</summary>
    private const int ReservedSharedBytes = 1024;
}
