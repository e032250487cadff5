using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Heuristics;

namespace Kascade.Cuda;

/// <summary>The arguments of <c>anchor_scores_mma</c> and <c>anchor_scores_wgmma</c> (their <c>AnchorScoreParams</c>, field for field).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AnchorScoreParams
{
    public nint Q;          // fp32 [tokens, heads, head dim]
    public nint KCache;     // bf16 [kv heads, capacity, head dim], one layer
    public nint Scores;     // fp32 [units · kv heads, stride]
    public long Stride;
    public int Tokens, Heads, KvHeads, Capacity, Start, PostSoftmax, QueryParts;
    public float Scale;
    public nint RowLse;     // fp32 [tokens, heads]: the rows' natural-log log-sum-exp from layer 0's dense pass, or 0 (anchor_scores_wgmma only)
}

/// <summary>
/// The anchors' pooled scores for a prefill chunk on tensor cores (<c>anchor_scores_wgmma.cu</c> on Hopper,
/// <c>anchor_prefill.cu</c>'s mma.sync kernel elsewhere): the scores of a FlashAttention pass, twice (the rows'
/// log-sum-exp, then each key's pooled probability), where the exact CUDA-core kernel spends 32 · group dot products per
/// key and tile. It serves Kascade's pooling (one pool per GQA group, summed);
/// the other poolings keep <c>pooled_tile_scores</c>.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<(int HeadDim, int Group, int QueryParts, bool Wgmma), AnchorKernel> _anchorFunctions = [];

    /// <summary>A compiled anchor-score kernel: its function, name, threads per block and dynamic shared memory.</summary>
    private readonly record struct AnchorKernel(nint Function, string Name, int Threads, int SharedBytes);

    /// <summary>
    /// <see cref="IBackend.PooledTileScores"/> of a prefill chunk on tensor cores where it applies — a pool per GQA group
    /// of 1 to 8 heads, summed, a tensor-core head dim — writing fp32 <c>[units · KvHeads, stride]</c>; false where it
    /// does not (the exact kernel runs instead). <see cref="AnchorFunction"/> picks the kernel.
    /// </summary>
    /// <param name="rowLse">fp32 <c>[Tokens, Heads]</c>: each row's natural-log log-sum-exp from <see cref="TryLayerZeroPrefill"/>'s
    /// dense pass, which <c>anchor_scores_wgmma</c> takes instead of its first pass; 0 for both passes.</param>
    private bool TryPoolPrefill(AttentionArgs args, ScorePooling pooling, ScorePrecision precision, int pools, bool maxPool, nint q, CudaKvCache c, nint scores, long stride, nint rowLse = 0)
    {
        int group = args.Heads / args.KvHeads;
        if (!FastSelection || args.Tokens == 1 || pools != args.KvHeads || maxPool || group is not (1 or 2 or 4 or 8) || AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            return false;
        }
        if (AnchorFunction(args.HeadDim, group, QueryParts(precision)) is not { } kernel)
        {
            return false;
        }
        // Prefill is never recorded: the host's start position is the step's.
        var parameters = new AnchorScoreParams
        {
            Q = q, KCache = c.LayerKeys(args.Layer), Scores = scores, Stride = stride, Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads,
            Capacity = c.Shape.Capacity, Start = args.StartPosition, PostSoftmax = pooling == ScorePooling.PostSoftmax ? 1 : 0,
            QueryParts = QueryParts(precision), Scale = args.Scale, RowLse = rowLse,
        };
        LaunchWith(kernel.Function, kernel.Name, new Dim3((uint)Units(args), (uint)args.KvHeads, 1), (uint)kernel.Threads, (uint)kernel.SharedBytes, parameters);
        return true;
    }

    /// <summary>
    /// Layer 0 of a prefill chunk where its scores run on <c>anchor_scores_wgmma</c> (Kascade's pooling, post-softmax): the
    /// dense output by <c>attention_wgmma_lse</c> (the fp32 query as bf16 hi + lo, as the exact anchor scores) or
    /// <c>attention_wgmma_lse_bf16</c> (the query's unscaled bf16 rounding, the scale applied to the scores, as the bf16
    /// ones), which also gives each row's log-sum-exp of those scores, then the pooled scores from it without their first
    /// pass — a pass of Q·Kᵀ over the chunk's keys that the dense pass already made (on the H100 at 128k, layer 0 868 → 681
    /// ms exact, 678 → 532 with bf16 scores; session 14, call F). Layer 0's exact output thus comes from the hi + lo query here. Writes <paramref name="output"/> and the
    /// scores; false where it does not apply (a kernel other than attention_wgmma, an output that is the query), and the
    /// caller runs the dense kernel and both passes.
    /// </summary>
    private bool TryLayerZeroPrefill(AttentionArgs args, ScorePrecision precision, int pools, DeviceTensor q, CudaKvCache c, nint scores, long stride, DeviceTensor output)
    {
        int group = args.Heads / args.KvHeads;
        if (!FastSelection || args.Tokens == 1 || pools != args.KvHeads || !TileRunsWgmma(args.HeadDim, group, Hopper) ||
            AnchorFunction(args.HeadDim, group, QueryParts(precision)) is null || In(q) == Out(output))
        {
            return false;
        }
        var kernel = KernelFor(new AttentionShape(args.Tokens, group, args.KvHeads, args.HeadDim, 1));
        if (kernel.Kind != AttentionKernelKind.Wgmma)
        {
            return false;
        }
        args.CheckPools(pools);
        nint rowLse = Scratch(ref _rowLse, (long)args.Tokens * args.Heads * sizeof(float)).Pointer;
        TensorCoreAttention(args, 1, q, c.LayerKeys(args.Layer), c.LayerValues(args.Layer), c.Shape.Capacity, 0, output,
            precision == ScorePrecision.Bf16 ? "attention_wgmma_lse_bf16" : "attention_wgmma_lse", rowLse);
        if (!TryPoolPrefill(args, ScorePooling.PostSoftmax, precision, pools, maxPool: false, In(q), c, scores, stride, rowLse))
        {
            throw new InvalidOperationException("internal error: layer 0's pooled scores did not take the tensor-core kernel its dense pass was chosen for");
        }
        return true;
    }

    /// <summary>
    /// The tensor-core score kernels' <c>query_parts</c>: 2, the fp32 query as bf16 hi + lo (exact); 1, its bf16 rounding,
    /// one MMA per score (<see cref="ScorePrecision.Bf16"/>).
    /// </summary>
    private static int QueryParts(ScorePrecision precision) => precision == ScorePrecision.Bf16 ? 1 : 2;

    /// <summary>
    /// Whether a 32-query tile's kernels of a (head dim, group) run on warpgroup MMA (<c>anchor_scores_wgmma</c>,
    /// <c>sparse_prefill_wgmma</c>): Hopper, a head dim of 64 or 128, and a block of 32 · group rows that fills whole
    /// 64-row warpgroup tiles (group 2, 4 or 8); else their mma.sync kernels. On the H100 (session 13, head dim 128) the
    /// anchor scores run 3.0×, 2.2× and 1.8× faster at groups 2, 4 and 8 (32k prefill), the reuse layer 80 → 36 ms at
    /// group 4 (128k, over two calls; the other groups not timed).
    /// </summary>
    internal static bool TileRunsWgmma(int headDim, int group, bool hopper) => AttentionHeadDims.RunsWgmma(headDim, hopper) && group is 2 or 4 or 8;

    /// <summary>
    /// anchor_scores_wgmma's dynamic shared memory: the query parts and the two key slots in the swizzled layout (bf16),
    /// the rows' log-sum-exp (fp32) and 1 KiB to align the swizzle atoms.
    /// </summary>
    internal static int AnchorWgmmaShared(int headDim, int group, int queryParts) =>
        (queryParts * TopKBudget.TileSize * group + TileKernels.AnchorWgmma.Stages * TileKernels.Keys) * headDim * sizeof(ushort) + TopKBudget.TileSize * group * sizeof(float) + 1024;

    /// <summary>
    /// The anchor-score kernel for (head dim, group, query parts), or null where its shared memory is more than the GPU
    /// allows a block (anchor_scores_mma at group 8 and head dim 128 needs 170 KiB; an A100 allows 163): the exact
    /// kernel runs there.
    /// </summary>
    private AnchorKernel? AnchorFunction(int headDim, int group, int queryParts)
    {
        bool wgmma = TileRunsWgmma(headDim, group, Hopper);
        if (!_anchorFunctions.TryGetValue((headDim, group, queryParts, wgmma), out var entry))
        {
            var spec = wgmma ? TileKernels.AnchorWgmma : TileKernels.Mma(group);
            // anchor_scores_mma: the queries' two bf16 halves (the block's 32 · group rows) and the key ring, rows padded by 8 bf16 (TILE_STRIDE).
            int shared = wgmma ? AnchorWgmmaShared(headDim, group, queryParts) : (2 * spec.BlockRows + spec.Stages * spec.Keys) * (headDim + 8) * sizeof(ushort);
            if (shared > _device.MaxSharedMemoryOptin)
            {
                return null;
            }
            if (wgmma)
            {
                string name = queryParts == 2 ? "anchor_scores_wgmma" : "anchor_scores_wgmma_bf16";
                entry = new AnchorKernel(OptIn(Module("anchor_scores_wgmma.cu", AttentionDefines(headDim, group, spec)).Function(name), name, shared), name, spec.Threads, shared);
            }
            else
            {
                entry = new AnchorKernel(OptIn(Module("anchor_prefill.cu", AttentionDefines(headDim, group, spec)).Function("anchor_scores_mma"), "anchor_scores_mma", shared), "anchor_scores_mma", spec.Threads, shared);
            }
            _anchorFunctions[(headDim, group, queryParts, wgmma)] = entry;
        }
        return entry;
    }
}
