using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// decode_selection.cu's RawPoolParams: a decode step's raw scores for <c>cluster_topk</c> to pool as it reads its rows.
/// </summary>
internal struct RawPoolParams
{
    public nint Raw;        // fp32 [rows · PoolHeads, Stride], natural-log units; 0: the Top-k reads SelectParams.Scores
    public nint Partial;    // fp32 [rows · PoolHeads, Partials, 2]: each head's split (max, sum) pairs; 0: pre-softmax pooling
    public long Stride;
    public int Partials;
    public int PoolHeads;   // heads a row pools, at most POOL_MAX_HEADS
}

/// <summary>
/// The fast path of a decode step's selection (<c>decode_selection.cu</c>): scores of a whole GQA group in one pass over
/// the keys, and a Top-k that spreads each of a decode step's few rows over a cluster of blocks. Both replace the exact
/// first kernels where they apply and give the same scores (up to summation order) and the same key sets.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>decode_selection.cu's TOPK_CLUSTER.</summary>
    private const int TopKCluster = 8;

    /// <summary>Rows shorter than this are ranked by one block each: a cluster's barriers cost more than they save there.</summary>
    private const int ClusterTopKMinCandidates = 8192;

    private readonly Dictionary<int, CudaModule> _decodeSelectionModules = [];

    /// <summary>
    /// Whether the fast selection kernels run where they apply (tensor-core decode scores and sparse attention,
    /// <c>cluster_topk</c>, the tensor-core prefill anchor scores and sparse attention); otherwise the exact first kernels
    /// run everywhere. On by default since <c>kascade test-backend</c> passed with both on an H100 (2026-12-05, 2659 of
    /// 2659, bench/results/kascade-h100.md); <c>KASCADE_FAST_SELECTION=0</c> turns it off for a process.
    /// </summary>
    public bool FastSelection { get; set; } = Environment.GetEnvironmentVariable("KASCADE_FAST_SELECTION") != "0";

    /// <summary>The result of <paramref name="run"/> on the exact kernels (<see cref="FastSelection"/> off), the setting restored after, also when it throws.</summary>
    public T WithExactKernels<T>(Func<T> run)
    {
        bool fast = FastSelection;
        FastSelection = false;
        try
        {
            return run();
        }
        finally
        {
            FastSelection = fast;
        }
    }
    private DeviceMemory? _decodeRaw;

    /// <summary>
    /// A decode step's raw scores before pooling (fp32 <c>[sequences · heads, Stride]</c> at <see cref="Raw"/>, natural-log
    /// units) and each row's split (max, sum) pairs (fp32 <c>[sequences · heads, Partials, 2]</c> at <see cref="Partial"/>),
    /// whose merge is the row's normaliser: what <c>pool_decode_scores</c> pools and <c>sparse_decode_scored</c> attends with.
    /// </summary>
    private readonly record struct RawDecodeScores(nint Raw, long Stride, nint Partial, int Partials);

    /// <summary>
    /// A decode step's pooled scores (<see cref="IBackend.PooledTileScores"/>'s one-query tile) from the fast decode kernels
    /// (<see cref="TryRawDecodeScores"/>, then <c>pool_decode_scores</c>); false where they do not apply (the exact kernels
    /// run instead). Writes fp32 <c>[sequences · pools, stride]</c> at <paramref name="scores"/> (<c>s.Count</c>
    /// sequences), the first <c>StartPosition + 1</c> columns.
    /// </summary>
    private bool TryPoolDecode(AttentionArgs args, ScorePooling pooling, ScorePrecision precision, int pools, bool maxPool, nint q, CacheSequences s, nint scores, long stride, int extent)
    {
        if (TryRawDecodeScores(args, precision, q, s, extent) is not { } raw)
        {
            return false;
        }
        PoolDecodeScores(args, s.Count, pooling, pools, maxPool, raw, scores, stride, extent);
        return true;
    }

    /// <summary>
    /// A decode step's raw scores from one tensor-core pass over the keys (decode_scores.cu's <c>decode_scores_mma</c>:
    /// every query head of a GQA group scored per key, exact to fp32 by the split queries, or from their bf16 rounding)
    /// where the group and head dim fit attention_decode's specialisation; null where they do not.
    /// </summary>
    private RawDecodeScores? TryRawDecodeScores(AttentionArgs args, ScorePrecision precision, nint q, CacheSequences s, int extent)
    {
        if (!FastDecode(args))
        {
            return null;
        }
        // Splits fixed by the extent (the capacity in a recorded step), as attention_decode splits a context of that length.
        var (kernel, function, plan, units) = DecodeLaunch(args, ("decode_scores.cu", "decode_scores_mma"), extent, s.Count);
        int partials = plan.Splits * kernel.Warps, rows = s.Count * args.Heads;
        var raw = Scratch(ref _decodeRaw, (long)rows * extent * sizeof(float));
        var partial = Scratch(ref _lsePartial, (long)rows * partials * 2 * sizeof(float));
        Launch(function.Function, "decode_scores_mma", new Dim3((uint)plan.Splits, 1, (uint)(s.Count * units)), (uint)kernel.Threads, (uint)function.SharedBytes, dependent: true,
            q, s.Keys, raw.Pointer, (long)extent, partial.Pointer, s.Capacity, args.StartPosition, StartOnDevice(args.Step), args.Scale, args.KvHeads, s.Stride,
            QueryParts(precision));
        return new RawDecodeScores(raw.Pointer, extent, partial.Pointer, partials);
    }

    /// <summary>
    /// Whether a decode step runs the fast tensor-core decode kernels (decode_scores_mma, attention_decode_scores,
    /// sparse_decode_mma): the fast kernels on, one query token, a group attention_decode's rows hold, a tensor-core head dim.
    /// </summary>
    private bool FastDecode(AttentionArgs args) =>
        FastSelection && args.Tokens == 1 && args.Heads / args.KvHeads <= AttentionKernel.DecodeRows && AttentionHeadDims.Family(args.HeadDim) == AttentionFamily.TensorCores;

    /// <summary>
    /// A kernel that takes attention_decode's specialisation for the step's group, or for one query head with
    /// <paramref name="perQueryHead"/> (<paramref name="entry"/>), and its split
    /// of <paramref name="keys"/> keys as attention_decode would split a context of that length (fixed by the capacity in a
    /// recorded step, so the step replays); <see cref="Tuning"/>'s decode kernel and split count apply here as they do to
    /// attention_decode, unless the kernel cannot take it (another kind, or fewer rows a block than the group: these grids
    /// have one row tile), where the default runs. <c>Units</c>: the blocks a sequence takes in grid z (its KV heads, or its
    /// query heads with <paramref name="perQueryHead"/>).
    /// </summary>
    private (AttentionKernel Kernel, TensorCoreFunction Function, AttentionLaunchPlan Plan, int Units) DecodeLaunch(AttentionArgs args, (string Source, string Function) entry, int keys, int sequences, bool perQueryHead = false)
    {
        // A per-query-head launch runs each query head as a group of one, a block per query head.
        int group = perQueryHead ? 1 : args.Heads / args.KvHeads, units = perQueryHead ? args.Heads : args.KvHeads;
        var kernel = Tuning.Decode is { Kind: AttentionKernelKind.Decode } tuned && group <= tuned.BlockRows
            ? tuned
            : AttentionKernel.For(group, args.HeadDim, Hopper, _device.MaxSharedMemoryOptin);
        var function = TensorCoreFunction(args.HeadDim, group, kernel, entry);
        return (kernel, function, AttentionLaunch.Choose(kernel, 1, group, units, sequences, keys, _device.Multiprocessors, function.ResidentBlocks, Tuning.Splits), units);
    }

    /// <summary>
    /// <c>pool_decode_scores</c> over the raw scores of <paramref name="sequences"/> decode steps into fp32
    /// <c>[sequences · pools, stride]</c>, post-softmax after <c>combine_log_sum_exp</c> merges the rows' (max, sum)
    /// pairs. A pool's heads are consecutive rows, so a batch is one launch of <c>sequences · heads</c> rows in
    /// <c>sequences · pools</c> pools.
    /// </summary>
    private void PoolDecodeScores(AttentionArgs args, int sequences, ScorePooling pooling, int pools, bool maxPool, RawDecodeScores raw, nint scores, long stride, int extent)
    {
        int rows = sequences * args.Heads;
        nint lse = 0;
        if (pooling == ScorePooling.PostSoftmax)
        {
            lse = Scratch(ref _rowLse, (long)rows * sizeof(float)).Pointer;
            CombineLogSumExp(args.HeadDim, raw.Partial, lse, rows, raw.Partials);
        }
        Launch(DecodeSelectionModule(args.HeadDim), "pool_decode_scores", new Dim3((uint)((extent + 255) / 256), (uint)(sequences * pools), 1), 256, dependent: true, raw.Raw, lse, scores, stride, rows, sequences * pools,
            maxPool ? 1 : 0, args.StartPosition, StartOnDevice(args.Step));
    }

    /// <summary>
    /// Layer 0 of a decode step (<see cref="SelectionArgs.DenseOutput"/>): the dense output and the pooled scores of its
    /// selection from one pass over K and V (attention_decode.cu's <c>attention_decode_scores</c>: attention_decode with
    /// the queries in bf16 halves, writing every score and each split's (max, sum), whose merge is the rows' normaliser),
    /// where a separate dense pass and scores pass read the keys twice; false where the fast kernels do not apply (the
    /// caller then runs both). Writes <paramref name="output"/> (<c>s.Count</c> sequences) and returns the raw scores.
    /// </summary>
    private RawDecodeScores? TryDenseDecodeWithScores(AttentionArgs args, DeviceTensor q, CacheSequences s, int extent, DeviceTensor output)
    {
        if (!FastDecode(args))
        {
            return null;
        }
        int group = args.Heads / args.KvHeads, rows = s.Count * args.Heads;
        var shape = new AttentionShape(1, group, args.KvHeads, args.HeadDim, s.Count);
        var (kernel, _, plan) = PlanAttention(shape, args.StartPosition);
        if (kernel.Kind != AttentionKernelKind.Decode)
        {
            return null;                                         // a benchmark's tuning forced another kernel
        }
        var function = TensorCoreFunction(args.HeadDim, group, kernel, ("attention_decode.cu", "attention_decode_scores"));
        _recording?.Attention.TryAdd(shape, (plan.Kernel, plan.Splits));
        var parameters = new AttentionParams
        {
            Q = In(q), KCache = s.Keys, VCache = s.Values, Out = Out(output), StartAt = StartOnDevice(args.Step), SequenceStride = s.Stride,
            Tokens = 1, Heads = args.Heads, KvHeads = args.KvHeads, Capacity = s.Capacity, Start = args.StartPosition, Scale = args.Scale,
            PartialMl = Scratch(ref _partialMl, (long)rows * plan.Splits * 2 * sizeof(float)).Pointer,
        };
        if (plan.Splits > 1)
        {
            parameters.PartialOut = Scratch(ref _partialOut, (long)rows * plan.Splits * args.HeadDim * sizeof(float)).Pointer;
        }
        nint raw = Scratch(ref _decodeRaw, (long)rows * extent * sizeof(float)).Pointer;
        long rawStride = extent;
        var slots = stackalloc void*[3];
        slots[0] = &parameters;
        slots[1] = &raw;
        slots[2] = &rawStride;
        Launch(function.Function, "attention_decode_scores", new Dim3((uint)plan.Splits, (uint)plan.RowTiles, (uint)(s.Count * args.KvHeads)), (uint)kernel.Threads, (uint)function.SharedBytes, slots, dependent: true);
        if (plan.Splits > 1)
        {
            Launch(CombineModule(args.HeadDim), "attention_combine", new Dim3((uint)rows, 1, 1), (uint)args.HeadDim * CombineLanes, dependent: true, parameters.PartialOut, parameters.PartialMl, Out(output), plan.Splits);
        }
        return new RawDecodeScores(raw, rawStride, parameters.PartialMl, plan.Splits);
    }

    /// <summary>
    /// A Top-k of <paramref name="rows"/> rows of up to <paramref name="candidates"/> candidates: on Hopper when the rows
    /// are few and long, <c>cluster_topk</c> (a row per cluster of blocks); otherwise, where shared memory holds its
    /// candidate store, <c>wide_topk</c> (two reads of a row instead of five); <c>select_topk</c> with the exact kernels
    /// and elsewhere. The same set from each (Ranking.TopK's); the order within a row is the kernel's.
    /// </summary>
    private void LaunchTopK(int headDim, SelectParams parameters, int rows, int candidates)
    {
        if (TryClusterTopK(headDim, parameters, rows, candidates, default))
        {
            return;
        }
        if (FastSelection && WideTopK(headDim) is { } wide)
        {
            LaunchWith(wide, "wide_topk", new Dim3((uint)rows, 1, 1), SelectThreads, (uint)WideTopKShared, parameters);
            return;
        }
        LaunchWith(SelectionModule(headDim).Function("select_topk"), "select_topk", new Dim3((uint)rows, 1, 1), SelectThreads, 0, parameters);
    }

    /// <summary>
    /// <c>cluster_topk</c> over <paramref name="rows"/> rows where it runs (Hopper, the fast kernels on, few rows of at
    /// least <see cref="ClusterTopKMinCandidates"/> candidates); false where it does not. With <paramref name="pool"/>'s
    /// raw scores the kernel pools each row as it reads it, and <c>SelectParams.Scores</c> is neither read nor written.
    /// </summary>
    private bool TryClusterTopK(int headDim, SelectParams parameters, int rows, int candidates, RawPoolParams pool)
    {
        if (!FastSelection || !Hopper || candidates < ClusterTopKMinCandidates || rows * TopKCluster > 2 * _device.Multiprocessors)
        {
            return false;
        }
        // Each block holds its slice's keys in shared memory where they fit (rows up to 229,376 keys on Hopper), else
        // reads them from the row at each pass.
        var (function, longestSlice) = ClusterTopK(headDim);
        int perSlice = (candidates + TopKCluster - 1) / TopKCluster;
        int sliceCapacity = perSlice <= longestSlice ? perSlice : 0;
        var slots = stackalloc void*[3];
        slots[0] = &parameters;
        slots[1] = &sliceCapacity;
        slots[2] = &pool;
        Launch(function, "cluster_topk", new Dim3((uint)(rows * TopKCluster), 1, 1), SelectThreads, (uint)ClusterTopKShared(sliceCapacity), slots, dependent: true);
        return true;
    }

    /// <summary>
    /// A decode step's Top-k over its pooled raw scores (<paramref name="raw"/>, <c>sequences · heads</c> rows pooled into
    /// <paramref name="rows"/> = <c>sequences · pools</c>, summed): <c>cluster_topk</c> pooling each row as it reads it
    /// where it runs — two kernels fewer in the step (the rows' log-sum-exp merge and <c>pool_decode_scores</c>) for the
    /// same floats — else <c>pool_decode_scores</c> into the pooled-scores scratch (fp32 <c>[rows, extent]</c>, allocated
    /// only then) and <see cref="LaunchTopK"/>.
    /// </summary>
    private void PooledDecodeTopK(AttentionArgs args, int sequences, ScorePooling pooling, int pools, RawDecodeScores raw, SelectParams parameters, int rows, int extent)
    {
        int poolHeads = args.Heads / pools;
        var pool = new RawPoolParams
        {
            Raw = raw.Raw, Partial = pooling == ScorePooling.PostSoftmax ? raw.Partial : 0, Stride = raw.Stride, Partials = raw.Partials, PoolHeads = poolHeads,
        };
        if (poolHeads <= PoolMaxHeads && TryClusterTopK(args.HeadDim, parameters, rows, extent, pool))
        {
            return;
        }
        parameters.Scores = PooledScores(rows, extent).Pointer;
        PoolDecodeScores(args, sequences, pooling, pools, maxPool: false, raw, parameters.Scores, parameters.Stride, extent);
        LaunchTopK(args.HeadDim, parameters, rows, extent);
    }

    /// <summary>decode_selection.cu's POOL_MAX_HEADS: the most heads a row of <c>cluster_topk</c>'s own pooling sums.</summary>
    private const int PoolMaxHeads = 64;

    /// <summary>
    /// <c>cluster_topk</c>'s dynamic shared memory with a slice cache of <paramref name="sliceKeys"/> order keys: a 12-bit
    /// digit's histogram (TOPK_BINS), the block's share of the cluster's (CLUSTER_SHARE), the candidate store
    /// (CLUSTER_CANDIDATES keys and positions) and the slice.
    /// </summary>
    private static int ClusterTopKShared(int sliceKeys) => (4096 + 512 + 2 * 12288 + sliceKeys) * sizeof(int);

    private readonly Dictionary<int, (nint Function, int LongestSlice)> _clusterTopKFunctions = [];

    /// <summary>
    /// <c>cluster_topk</c>, its dynamic shared memory opted in to the most a block may have beside its static shared
    /// memory, and the longest slice that leaves room for (28,672 keys on Hopper: rows up to 229,376 keys are read once).
    /// </summary>
    private (nint Function, int LongestSlice) ClusterTopK(int headDim)
    {
        if (!_clusterTopKFunctions.TryGetValue(headDim, out var entry))
        {
            nint function = DecodeSelectionModule(headDim).Function("cluster_topk");
            CudaCheck.ThrowIfFailed(Driver.cuFuncGetAttribute(out int staticBytes, CuFunctionAttribute.SharedSizeBytes, function), "cuFuncGetAttribute(cluster_topk)");
            // The kernel's static shared memory as the driver counts it (ptxas: 288 bytes; an opt-in computed from the 284
            // the source declares was 4 bytes over the limit and refused on the H100), rounded up to 1 KiB of slack.
            int reserved = (staticBytes + 1023) / 1024 * 1024;
            int longestSlice = Math.Max(0, (_device.MaxSharedMemoryOptin - reserved - ClusterTopKShared(0)) / sizeof(int));
            entry = (OptIn(function, "cluster_topk", ClusterTopKShared(longestSlice)), longestSlice);
            _clusterTopKFunctions[headDim] = entry;
        }
        return entry;
    }

    /// <summary><c>wide_topk</c>'s dynamic shared memory: a 12-bit digit's histogram (TOPK_BINS) and the candidate store (WIDE_CANDIDATES keys and positions).</summary>
    private const int WideTopKShared = (4096 + 2 * 12288) * sizeof(int);

    private readonly Dictionary<int, nint?> _wideTopKFunctions = [];

    /// <summary>
    /// <c>wide_topk</c> with its shared memory opted in, or null where two of its blocks do not fit a multiprocessor by
    /// the driver's occupancy (its loads need both in flight; with one — an A100's 164 KiB a multiprocessor —
    /// <c>select_topk</c>, two a multiprocessor in less memory, is the faster choice; Hopper fits two).
    /// </summary>
    private nint? WideTopK(int headDim)
    {
        if (!_wideTopKFunctions.TryGetValue(headDim, out nint? wide))
        {
            if (WideTopKShared <= _device.MaxSharedMemoryOptin)
            {
                nint function = OptIn(PlanModule(_wideTopKModules, "wide_topk.cu", headDim).Function("wide_topk"), "wide_topk", WideTopKShared);
                CudaCheck.ThrowIfFailed(Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(out int resident, function, (int)SelectThreads, WideTopKShared), "cuOccupancyMaxActiveBlocksPerMultiprocessor(wide_topk)");
                wide = resident >= 2 ? function : null;
            }
            _wideTopKFunctions[headDim] = wide;
        }
        return wide;
    }

    private readonly Dictionary<int, CudaModule> _wideTopKModules = [];

    /// <summary>
    /// The Top-k kernel alone (benchmarks): the <c>plan.Capacity</c> largest of each row of <paramref name="scores"/>
    /// (fp32 <c>[rows, cols]</c>) into rows <c>[0, rows)</c> of <paramref name="plan"/> (ties to the lower position), by
    /// the kernel a selection of that many rows and columns uses.
    /// </summary>
    public void TopKRows(DeviceTensor scores, KeyPlan plan)
    {
        var p = (CudaKeyPlan)plan;
        if (p.Rows < scores.Rows)
        {
            throw new ArgumentException($"a plan of {p.Rows} rows cannot hold the Top-k of {scores.Rows} rows");
        }
        p.WrittenUnserved();
        var parameters = new SelectParams
        {
            Scores = In(scores), Indices = p.Indices.Pointer, Counts = p.Counts.Pointer, Stride = scores.Cols, RowsPerUnit = 1,
            Capacity = p.Capacity, Tokens = scores.Cols, Mode = 2, PageSize = 1,
        };
        // Any head dim the plan kernels compile for: the Top-k reads none.
        LaunchTopK(128, parameters, scores.Rows, scores.Cols);
    }

    private CudaModule DecodeSelectionModule(int headDim) => PlanModule(_decodeSelectionModules, "decode_selection.cu", headDim);

    private void DisposeDecodeSelectionBuffers() => _decodeRaw?.Dispose();
}
