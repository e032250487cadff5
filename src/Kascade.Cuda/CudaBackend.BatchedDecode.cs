using Kascade.Core;
using Kascade.Cuda.Heuristics;

namespace Kascade.Cuda;

/// <summary>
/// The K/V an attention op reads: layer <see cref="Layer"/> of a session's cache (<see cref="Count"/> 1), or a batch of
/// <see cref="Count"/> sequences (<see cref="IBatchedDecode"/>: layer b of the cache is sequence b, <see cref="Stride"/>
/// elements after b − 1's). The decode kernels take a batch as grid z = sequence · KV heads + KV head.
/// </summary>
internal readonly record struct CacheSequences(CudaKvCache Cache, int Layer, int Count)
{
    public static CacheSequences Of(CudaKvCache cache, int layer) => new(cache, layer, 1);

    /// <summary>bf16 <c>[KvHeads, Capacity, HeadDim]</c> of the first sequence.</summary>
    public nint Keys => Cache.LayerKeys(Layer);

    public nint Values => Cache.LayerValues(Layer);

    /// <summary>Elements from one sequence's keys (or values) to the next's.</summary>
    public long Stride => Cache.LayerBytes / 2;

    public int Capacity => Cache.Shape.Capacity;

    /// <summary>Refuses a batch on a path that runs one sequence (the batch's ops check up front; this is the backstop).</summary>
    public void CheckSingle(string path)
    {
        if (Count != 1)
        {
            throw new InvalidOperationException($"{path} run one sequence, not a batch of {Count}");
        }
    }
}

/// <summary>
/// <see cref="IBatchedDecode"/> on the GPU: the decode kernels of a single step (attention_decode, attention_decode_scores,
/// decode_scores_mma, pool_decode_scores, the Top-k, sparse_decode_mma) launched once for the whole batch, a block per
/// (split, sequence, KV head). Kascade's batched ops need the fast decode kernels (a tensor-core head dim and a GQA
/// group attention_decode's rows hold); dense batched decode any tensor-core head dim.
/// </summary>
public sealed unsafe partial class CudaBackend : IBatchedDecode
{
    /// <summary>The grid's z limit: a batch's blocks of (sequence, KV head) fit it.</summary>
    private const int MaxGridZ = 65535;

    /// <summary>The fast decode kernels run the shape (the ones the batched ops launch) and the sparse kernels' head limit holds.</summary>
    public bool RunsBatchedKascade(AttentionArgs args) => FastDecode(args with { Tokens = 1 }) && args.Heads <= SparseParams.MaxHeads;

    public void BatchedDecodeAttention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        BatchedDecodeArgs.Check(args, c, q, output);
        CheckGrid(args);
        if (AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            throw new KascadeException($"batched decode needs a head dim that is a multiple of 32 up to {AttentionHeadDims.MaxTensorCores}, not {args.HeadDim}");
        }
        var s = new CacheSequences(c, 0, args.Tokens);
        TensorCoreAttention(args with { Tokens = 1 }, s.Count, q, s.Keys, s.Values, s.Capacity, s.Stride, output);
    }

    public void BatchedAnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output)
    {
        var (step, s) = KascadeBatch(args, cache, plan, q, output);
        Anchor(step, selection, q, s, (CudaKeyPlan)plan, output);
    }

    public void BatchedSparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var (step, s) = KascadeBatch(args, cache, plan, q, output);
        BatchedDecodeArgs.CheckHeadMap(args, headMap);
        Sparse(step, (CudaKeyPlan)plan, headMap, q, s, output);
    }

    /// <summary>A batch's one decode step (Tokens 1) and its sequences, once the fast decode kernels are known to run it.</summary>
    private (AttentionArgs Step, CacheSequences Sequences) KascadeBatch(AttentionArgs args, KvCache cache, KeyPlan plan, DeviceTensor q, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        BatchedDecodeArgs.Check(args, c, q, output, plan);
        CheckGrid(args);
        if (!RunsBatchedKascade(args))
        {
            throw new KascadeException($"batched Kascade decode runs on the fast tensor-core decode kernels: a head dim that is a multiple of 32 up to {AttentionHeadDims.MaxTensorCores}, a GQA group of at most {AttentionKernel.DecodeRows} and at most {SparseParams.MaxHeads} query heads, with KASCADE_FAST_SELECTION on (head dim {args.HeadDim}, group {args.Heads / args.KvHeads}, {args.Heads} heads)");
        }
        return (args with { Tokens = 1, Layer = 0 }, new CacheSequences(c, 0, args.Tokens));
    }

    private static void CheckGrid(AttentionArgs args)
    {
        if ((long)args.Tokens * args.KvHeads > MaxGridZ)
        {
            throw new KascadeException($"a batch of {args.Tokens} sequences × {args.KvHeads} KV heads exceeds the {MaxGridZ} blocks a launch's grid z holds");
        }
    }
}
