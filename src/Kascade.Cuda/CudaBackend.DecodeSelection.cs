using Kascade.Core;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// The fast path of a decode step's selection (<c>decode_selection.cu</c>): scores of a whole GQA group in one pass over
/// the keys, and a Top-k that spreads each of a decode step's few rows over a cluster of blocks. Both replace the exact
/// first kernels where they apply and give the same scores (up to summation order) and the same plans.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>decode_selection.cu's MAX_GROUP, SCORE_THREADS and TOPK_CLUSTER.</summary>
    private const int MaxDecodeGroup = 8, ScoreThreads = 128, TopKCluster = 8;

    /// <summary>Rows shorter than this are ranked by one block each: a cluster's barriers cost more than they save there.</summary>
    private const int ClusterTopKMinCandidates = 8192;

    private readonly Dictionary<int, CudaModule> _decodeSelectionModules = [];

    /// <summary>
    /// Whether the fast selection kernels run where they apply (one-pass decode scores, <c>cluster_topk</c>, the tensor-core
    /// prefill anchor scores and sparse attention); otherwise the exact first kernels run everywhere. On by default since
    /// <c>kascade test-backend</c> passed with both on an H100 (2026-12-05, 2659 of 2659, bench/results/kascade-h100.md);
    /// <c>KASCADE_FAST_SELECTION=0</c> turns it off for a process.
    /// </summary>
    public bool FastSelection { get; set; } = Environment.GetEnvironmentVariable("KASCADE_FAST_SELECTION") != "0";
    private DeviceMemory? _decodeRaw;

    /// <summary>
    /// A decode step's pooled scores (<see cref="IBackend.PooledTileScores"/>'s one-query tile) in one pass over the keys
    /// where the GQA group fits a <c>decode_key_scores</c> block; false where it does not (the exact kernels run instead).
    /// Writes fp32 <c>[pools, stride]</c> at <paramref name="scores"/>, the first <c>StartPosition + 1</c> columns.
    /// </summary>
    private bool TryPoolDecode(AttentionArgs args, ScorePooling pooling, int pools, bool maxPool, nint q, CudaKvCache c, nint scores, long stride, int extent)
    {
        if (!FastSelection || args.Tokens != 1 || args.Heads / args.KvHeads > MaxDecodeGroup)
        {
            return false;
        }
        var module = DecodeSelectionModule(args.HeadDim);
        var raw = Scratch(ref _decodeRaw, (long)args.Heads * extent * sizeof(float));
        // Splits fixed by the extent (the capacity in a recorded step), enough to fill the GPU at long contexts.
        int splits = Math.Clamp((extent + LseKeysPerSplit - 1) / LseKeysPerSplit, 1, 256);
        int keysPerSplit = (extent + splits - 1) / splits;
        var partial = Scratch(ref _lsePartial, (long)args.Heads * splits * 2 * sizeof(float));
        nint startAt = StartOnDevice(args.Step);
        Launch(module, "decode_key_scores", new Dim3((uint)splits, (uint)args.KvHeads, 1), ScoreThreads, q, c.LayerKeys(args.Layer), raw.Pointer, (long)extent,
            partial.Pointer, args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, startAt, args.Scale, keysPerSplit);
        nint lse = 0;
        if (pooling == ScorePooling.PostSoftmax)
        {
            lse = Scratch(ref _rowLse, (long)args.Heads * sizeof(float)).Pointer;
            Launch(SelectionModule(args.HeadDim), "combine_log_sum_exp", (uint)((args.Heads + 127) / 128), 128, partial.Pointer, lse, args.Heads, splits);
        }
        Launch(module, "pool_decode_scores", new Dim3((uint)((extent + 255) / 256), (uint)pools, 1), 256, raw.Pointer, lse, scores, stride, args.Heads, pools,
            maxPool ? 1 : 0, args.StartPosition, startAt);
        return true;
    }

    /// <summary>
    /// <c>select_topk</c> over <paramref name="rows"/> rows of up to <paramref name="candidates"/> candidates, or, on Hopper
    /// when the rows are few and long, <c>cluster_topk</c> (the same set in the same order, a row per cluster of blocks).
    /// </summary>
    private void LaunchTopK(int headDim, SelectParams parameters, int rows, int candidates)
    {
        if (FastSelection && Hopper && candidates >= ClusterTopKMinCandidates && rows * TopKCluster <= 2 * _device.Multiprocessors)
        {
            LaunchWith(DecodeSelectionModule(headDim).Function("cluster_topk"), "cluster_topk", new Dim3((uint)(rows * TopKCluster), 1, 1), SelectThreads, 0, parameters);
            return;
        }
        LaunchWith(SelectionModule(headDim).Function("select_topk"), "select_topk", new Dim3((uint)rows, 1, 1), SelectThreads, 0, parameters);
    }

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
