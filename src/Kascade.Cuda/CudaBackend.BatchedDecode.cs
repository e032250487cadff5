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
/// decode_scores_mma, pool_decode_scores, the Top-k, sparse_decode_mma or sparse_decode, the baselines' selectors)
/// launched once for the whole batch, a block per (split, sequence, KV head). Kascade's batched ops need the fast decode
/// kernels (a tensor-core head dim and a GQA group attention_decode's rows hold); dense batched decode any tensor-core
/// head dim; the baselines what <see cref="RunsBatchedSelector"/> says.
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
        var (step, s) = Batch(args, cache, q, output, plan);
        if (!RunsBatchedKascade(args))
        {
            throw new KascadeException($"batched Kascade decode runs on the fast tensor-core decode kernels: {FastDecodeShapes} (head dim {args.HeadDim}, group {args.Heads / args.KvHeads}, {args.Heads} heads)");
        }
        Anchor(step, selection, q, s, (CudaKeyPlan)plan, output);
    }

    /// <summary>
    /// Runs on sparse_decode_mma (the fast kernels; a per-query-head map as groups of one) or on sparse_decode (a head dim of at most 128,
    /// any map), the sequence in grid z; refused with one error where neither applies.
    /// </summary>
    public void BatchedSparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var (step, s) = Batch(args, cache, q, output, plan);
        Sparse(step, (CudaKeyPlan)plan, headMap, q, s, output);
    }

    /// <summary>
    /// Where a baseline's batched selection and the sparse attention over its plan run: selectors that score every key
    /// (omnikv's max-pooled and lessismore's per-head Top-k) on the fast decode kernels' scores; a plan per KV head
    /// (streamingllm, omnikv, lessismore) on either sparse decode kernel, one per query head (quest, sparcas) on
    /// sparse_decode, a head dim of at most 128.
    /// </summary>
    public bool RunsBatchedSelector(AttentionArgs args, KeySelector selector)
    {
        var step = args with { Tokens = 1 };
        bool scores = selector is not (KeySelector.MaxPooledTopK or KeySelector.UnionTopK) || FastDecode(step);
        int setHeads = selector.Selectors(args.Heads) == 1 ? args.Heads / args.KvHeads : 1;
        bool sparse = (setHeads > 1 && FastDecode(step)) || SparseDecodeRuns(step, setHeads);
        return args.Heads <= SparseParams.MaxHeads && scores && sparse;
    }

    public void BatchedUpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state)
    {
        BatchedDecodeArgs.CheckSelector(args, cache, state);
        CheckGrid(args);
        UpdateState(args with { Tokens = 1, Layer = 0 }, new CacheSequences((CudaKvCache)cache, 0, args.Tokens), (CudaSelectorState)state);
    }

    public void BatchedSelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan)
    {
        var (step, s) = Batch(args, cache, q, null, plan);
        BatchedDecodeArgs.CheckSelector(args, cache, state, plan);
        if (!RunsBatchedSelector(args, state.Selector))
        {
            throw new KascadeException($"batched {state.Selector.GetType().Name} selection does not run this shape on the GPU (head dim {args.HeadDim}, group {args.Heads / args.KvHeads}, {args.Heads} heads): "
                + $"its scores need the fast tensor-core decode kernels ({FastDecodeShapes}), its sparse attention a head dim of at most {DecodeThreads} or those kernels");
        }
        Select(step, q, s, (CudaSelectorState)state, (CudaKeyPlan)plan);
    }

    /// <summary>What the fast decode kernels run, for refusals.</summary>
    private static string FastDecodeShapes =>
        $"a head dim that is a multiple of 32 up to {AttentionHeadDims.MaxTensorCores}, a GQA group of at most {AttentionKernel.DecodeRows} and at most {SparseParams.MaxHeads} query heads, with KASCADE_FAST_SELECTION on";

    /// <summary>A batch's one decode step (Tokens 1, the batch's sequences from layer 0 of the cache), its arguments checked.</summary>
    private static (AttentionArgs Step, CacheSequences Sequences) Batch(AttentionArgs args, KvCache cache, DeviceTensor q, DeviceTensor? output, KeyPlan plan)
    {
        var c = (CudaKvCache)cache;
        BatchedDecodeArgs.Check(args, c, q, output, plan);
        CheckGrid(args);
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
