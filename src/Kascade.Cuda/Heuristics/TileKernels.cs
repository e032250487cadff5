namespace Kascade.Cuda.Heuristics;

/// <summary>
/// The specialisations (<c>ATT_*</c> defines) of the kernels that take one 32-query tile of one KV head a block — Kascade's
/// anchor scores and its sparse prefill — decided here once and passed to the sources as defines, so that the launch
/// (threads, grid, shared memory) and the kernel cannot disagree. A tile's rows are its 32 queries × the GQA group.
/// </summary>
public static class TileKernels
{
    /// <summary>Keys a block stages at a time in all four kernels.</summary>
    public const int Keys = 64;

    /// <summary>
    /// <c>anchor_scores_mma</c> (anchor_prefill.cu) and <c>sparse_prefill_mma</c> (sparse_prefill.cu): a warp per query
    /// head of the group, two 16-row tiles each (the tile's 32 queries), over a ring of two K/V tiles.
    /// </summary>
    public static AttentionKernel Mma(int group) => new(group, 2, Keys, 2);

    /// <summary><c>anchor_scores_wgmma</c>: one warpgroup walks the tile's 64-row chunks over a ring of two key slots.</summary>
    public static AttentionKernel AnchorWgmma { get; } = new(4, 1, Keys, 2, AttentionKernelKind.Wgmma);

    /// <summary>
    /// <c>sparse_prefill_wgmma</c>: a warpgroup per 64 of the tile's rows, at most two a block — group 2 one, group 4
    /// two, group 8 two in each of two row blocks (<see cref="RowBlocks"/>) — over the dense kernel's ring of three.
    /// </summary>
    public static AttentionKernel SparseWgmma(int group) => new(group == 2 ? 4 : 8, 1, Keys, 3, AttentionKernelKind.Wgmma);

    /// <summary>Blocks (grid z) that share a tile's rows under <paramref name="kernel"/>.</summary>
    public static int RowBlocks(AttentionKernel kernel, int group) => Kascade.Core.TopKBudget.TileSize * group / kernel.BlockRows;
}
