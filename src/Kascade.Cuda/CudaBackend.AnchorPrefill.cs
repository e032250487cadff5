using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Heuristics;

namespace Kascade.Cuda;

/// <summary>The arguments of <c>anchor_scores_mma</c> (its <c>AnchorScoreParams</c>, field for field).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AnchorScoreParams
{
    public nint Q;          // fp32 [tokens, heads, head dim]
    public nint KCache;     // bf16 [kv heads, capacity, head dim], one layer
    public nint Scores;     // fp32 [units · kv heads, stride]
    public long Stride;
    public int Tokens, Heads, KvHeads, Capacity, Start, PostSoftmax, QueryParts;
    public float Scale;
}

/// <summary>
/// The anchors' pooled scores for a prefill chunk on tensor cores (<c>anchor_prefill.cu</c>): the scores of a
/// FlashAttention pass, twice (the rows' log-sum-exp, then each key's pooled probability), where the exact CUDA-core
/// kernel spends 32 · group dot products per key and tile. It serves Kascade's pooling (one pool per GQA group, summed);
/// the other poolings keep <c>pooled_tile_scores</c>.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>anchor_prefill.cu's ATT_KEYS (keys per tile of its ring, two tiles).</summary>
    private const int AnchorKeys = 64, AnchorStages = 2;

    private readonly Dictionary<(int HeadDim, int Group), (nint Function, int SharedBytes)> _anchorFunctions = [];

    /// <summary>
    /// <see cref="IBackend.PooledTileScores"/> of a prefill chunk through <c>anchor_scores_mma</c> where it applies — a pool
    /// per GQA group of 1 to 8 heads, summed, a tensor-core head dim — writing fp32 <c>[units · KvHeads, stride]</c>; false
    /// where it does not (the exact kernel runs instead).
    /// </summary>
    private bool TryPoolPrefill(AttentionArgs args, ScorePooling pooling, ScorePrecision precision, int pools, bool maxPool, nint q, CudaKvCache c, nint scores, long stride)
    {
        int group = args.Heads / args.KvHeads;
        if (!FastSelection || args.Tokens == 1 || pools != args.KvHeads || maxPool || group is not (1 or 2 or 4 or 8) || AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            return false;
        }
        var (function, shared) = AnchorFunction(args.HeadDim, group);
        // Prefill is never recorded: the host's start position is the step's.
        var parameters = new AnchorScoreParams
        {
            Q = q, KCache = c.LayerKeys(args.Layer), Scores = scores, Stride = stride, Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads,
            Capacity = c.Shape.Capacity, Start = args.StartPosition, PostSoftmax = pooling == ScorePooling.PostSoftmax ? 1 : 0,
            QueryParts = QueryParts(precision), Scale = args.Scale,
        };
        LaunchWith(function, "anchor_scores_mma", new Dim3((uint)Units(args), (uint)args.KvHeads, 1), (uint)(group * 32), (uint)shared, parameters);
        return true;
    }

    /// <summary>
    /// The tensor-core score kernels' <c>query_parts</c>: 2, the fp32 query as bf16 hi + lo (exact); 1, its bf16 rounding,
    /// one MMA per score (<see cref="ScorePrecision.Bf16"/>).
    /// </summary>
    private static int QueryParts(ScorePrecision precision) => precision == ScorePrecision.Bf16 ? 1 : 2;

    private (nint Function, int SharedBytes) AnchorFunction(int headDim, int group)
    {
        if (!_anchorFunctions.TryGetValue((headDim, group), out var entry))
        {
            nint function = Module("anchor_prefill.cu", AttentionDefines(headDim, group)).Function("anchor_scores_mma");
            // The queries' two bf16 halves (32 · group rows) and the key ring, rows padded by 8 bf16 (TILE_STRIDE).
            int shared = (2 * TopKBudget.TileSize * group + AnchorStages * AnchorKeys) * (headDim + 8) * sizeof(ushort);
            entry = (OptIn(function, "anchor_scores_mma", shared), shared);
            _anchorFunctions[(headDim, group)] = entry;
        }
        return entry;
    }
}
