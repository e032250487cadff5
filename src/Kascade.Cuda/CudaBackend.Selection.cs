using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>A <see cref="KeyPlan"/> in device memory: int32 <c>indices [Rows, Capacity]</c> and <c>counts [Rows]</c>.</summary>
public sealed class CudaKeyPlan : KeyPlan
{
    internal CudaKeyPlan(int units, int selectors, int capacity, PlanUnit unit)
        : base(units, selectors, capacity, unit)
    {
        Indices = DeviceMemory.Allocate(Math.Max(1L, (long)Rows * capacity) * sizeof(int));
        try
        {
            Counts = DeviceMemory.Allocate((long)Rows * sizeof(int));
        }
        catch
        {
            Indices.Dispose();
            throw;
        }
    }

    internal DeviceMemory Indices { get; }

    internal DeviceMemory Counts { get; }

    /// <summary>
    /// Whether an attention kernel has read the plan since a kernel last wrote it (host-side, in launch order, which a
    /// recorded step replays): the writer has then ended before any later attention kernel starts (attention_decode.cu's
    /// decode_attend waits for the kernel before it before it lets the next one launch), so <c>sparse_decode_mma</c>
    /// reads such a plan — an earlier layer's, in a reuse layer — before it waits for the kernel before it. Every op that
    /// writes the plan ends in <see cref="KeyPlan.Serve"/>, which clears it; <see cref="CudaBackend.TopKRows"/>, which
    /// serves no chunk, clears it itself.
    /// </summary>
    internal bool Settled { get; private set; }

    protected override void Written() => Settled = false;

    /// <summary>Marks the plan written by kernels that serve no chunk (<see cref="CudaBackend.TopKRows"/>).</summary>
    internal void WrittenUnserved() => Written();

    /// <summary>Called before an attention kernel reads the plan; returns whether the plan was settled for it.</summary>
    internal bool Reading()
    {
        bool settled = Settled;
        Settled = true;
        return settled;
    }

    public override void Dispose()
    {
        Indices.Dispose();
        Counts.Dispose();
    }
}

/// <summary>The arguments of <c>pooled_tile_scores</c> (its <c>PoolParams</c>, field for field).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PoolParams
{
    public nint Q;          // fp32 [tokens, heads, head dim]
    public nint KCache;     // bf16 [kv heads, capacity, head dim], one layer
    public nint Lse;        // fp32 [tokens, heads], or 0: pre-softmax
    public nint Scores;     // fp32 [units · pools, stride]
    public nint StartAt;
    public long Stride;
    public int Tokens, Heads, KvHeads, Capacity, Start, Pools, MaxPool, RoundQuery;
    public float Scale;
}

/// <summary>The arguments of <c>select_topk</c> (its <c>SelectParams</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SelectParams
{
    public nint Scores;     // fp32 [rows, stride]
    public nint Indices;    // int32 [rows, capacity]
    public nint Counts;     // int32 [rows]
    public nint StartAt;
    public long Stride;
    public double Percent;
    public int RowsPerUnit, Capacity, Tokens, Start, Mode, Rule;
    public int PageSize;            // mode 1: keys per candidate page (1: keys)
    public double RecentFraction;   // mode 1: share of the budget taken off each row (lessismore's recent keys)
}

/// <summary>
/// Kascade's select/attend ops on the device (<c>selection.cu</c>): pooled tile scores, per-row probabilities, a radix
/// Top-k that writes a <see cref="CudaKeyPlan"/>, the anchors, and the oracle (sparse attention over a plan:
/// <c>CudaBackend.SparseAttention.cs</c>). No op reads anything back, so a
/// decode step of any of these methods records as a CUDA graph: budgets and tiles are computed on the device from the
/// step's position, and every buffer is sized for the session's capacity in decode.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Keys a thread block of <c>pooled_tile_scores</c> and <c>row_probabilities</c> covers (KEYS_PER_BLOCK).</summary>
    private const int KeysPerBlock = 128;

    /// <summary>Threads of a <c>select_topk</c> block (SELECT_THREADS).</summary>
    private const uint SelectThreads = 1024;

    /// <summary>
    /// Most bytes of probability rows the oracle holds at once: its chunk's rows are scored and selected in groups of
    /// queries that fit, so memory stays bounded at any context (the official code keeps tiles × keys, 8.6 GB at 128k).
    /// </summary>
    private const long OracleWorkspaceBytes = 256L << 20;

    private readonly Dictionary<int, CudaModule> _selectionModules = [];
    private DeviceMemory? _rowLse, _lsePartial, _tileScores, _oracleScores, _oracleIndices, _oracleCounts;

    /// <summary>
    /// The pooled scores, fp32 <c>[rows, extent]</c>: asked for only where a Top-k reads pooled rows from memory (not
    /// where <c>cluster_topk</c> pools a decode step itself, <see cref="PooledDecodeTopK"/>), so a decode anchor holds
    /// no copy of its rows it never reads (2 MiB of a 32k anchor's extra memory, session 27).
    /// </summary>
    private DeviceMemory PooledScores(int rows, int extent) => Scratch(ref _tileScores, (long)rows * extent * sizeof(float));

    public KeyPlan AllocatePlan(int units, int selectors, int capacity, PlanUnit unit = PlanUnit.Tile) => new CudaKeyPlan(units, selectors, capacity, unit);

    public void ReadPlan(KeyPlan plan, Span<int> counts, Span<int> indices)
    {
        var p = (CudaKeyPlan)plan;
        ThrowIfRecording("ReadPlan");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(counts.Length, p.Rows);
        ArgumentOutOfRangeException.ThrowIfLessThan(indices.Length, counts.Length * p.Capacity);
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        fixed (int* c = counts, i = indices)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)c, p.Counts.Pointer, (nuint)(counts.Length * sizeof(int))), "cuMemcpyDtoH");
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)i, p.Indices.Pointer, (nuint)((long)counts.Length * p.Capacity * sizeof(int))), "cuMemcpyDtoH");
        }
    }

    public void WritePlan(AttentionArgs args, KeyPlan plan, ReadOnlySpan<int> counts, ReadOnlySpan<int> indices)
    {
        var p = (CudaKeyPlan)plan;
        ThrowIfRecording("WritePlan");
        p.CheckWrite(args, counts, indices);
        // Queued work may still read the plan: the synchronous copies wait for it.
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        fixed (int* c = counts, i = indices)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoD_v2(p.Counts.Pointer, (nint)c, (nuint)(counts.Length * sizeof(int))), "cuMemcpyHtoD");
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoD_v2(p.Indices.Pointer, (nint)i, (nuint)((long)counts.Length * p.Capacity * sizeof(int))), "cuMemcpyHtoD");
        }
        p.Serve(args, args.Tokens, recording: false);
    }

    public void ExtendPlan(AttentionArgs args, KeyPlan plan)
    {
        var p = (CudaKeyPlan)plan;
        p.CheckExtend(args);
        Launch(SelectionModule(args.HeadDim), "extend_plan", (uint)((p.Rows + 127) / 128), 128, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, p.Rows,
            args.StartPosition, StartOnDevice(args.Step));
        p.Serve(args, 1, _recording is not null);
    }

    public void PooledTileScores(AttentionArgs args, ScorePooling pooling, int pools, DeviceTensor q, KvCache cache, DeviceTensor scores)
    {
        int units = Units(args);
        if (scores.Rows != units * pools || scores.Cols != args.StartPosition + args.Tokens)
        {
            throw new ArgumentException($"pooled tile scores need a [{units * pools}, {args.StartPosition + args.Tokens}] tensor, not [{scores.Rows}, {scores.Cols}]");
        }
        PoolTiles(args, pooling, ScorePrecision.Exact, pools, maxPool: false, q, CacheSequences.Of((CudaKvCache)cache, args.Layer), Out(scores), scores.Cols, scores.Cols);
    }

    public void AttentionProbabilities(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor probabilities)
    {
        int cols = args.StartPosition + args.Tokens;
        if (probabilities.Rows != args.Tokens * args.Heads || probabilities.Cols != cols)
        {
            throw new ArgumentException($"attention probabilities need a [{args.Tokens * args.Heads}, {cols}] tensor, not [{probabilities.Rows}, {probabilities.Cols}]");
        }
        var c = (CudaKvCache)cache;
        nint lse = RowLogSumExp(args, In(q), ScorePrecision.Exact, c, cols);
        RowProbabilities(args, In(q), c, lse, Out(probabilities), cols, cols);
    }

    public void AnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output) =>
        Anchor(args, selection, q, CacheSequences.Of((CudaKvCache)cache, args.Layer), (CudaKeyPlan)plan, output);

    /// <summary>
    /// <see cref="AnchorAttention"/> for <c>s.Count</c> sequences of <c>args.Tokens</c> queries each (a batch: decode
    /// steps, unit b of the plan sequence b's; <see cref="BatchedAnchorAttention"/>).
    /// </summary>
    private void Anchor(AttentionArgs args, SelectionArgs selection, DeviceTensor q, CacheSequences s, CudaKeyPlan p, DeviceTensor output)
    {
        int units = Units(args) * s.Count, selectors = selection.PoolAllHeads ? 1 : args.KvHeads;
        if (p.Selectors != selectors || units > p.Units)
        {
            throw new ArgumentException($"a plan of {p.Units} units × {p.Selectors} selectors cannot hold {units} units × {selectors}");
        }
        // A decode step's rows span the cache's capacity, so the recorded step replays at every later position.
        int extent = KeyExtent(args, s.Cache);
        var parameters = new SelectParams
        {
            Scores = 0, Indices = p.Indices.Pointer, Counts = p.Counts.Pointer, StartAt = StartOnDevice(args.Step),
            Stride = extent, Percent = selection.TopKPercent, RowsPerUnit = selectors, Capacity = p.Capacity,
            Tokens = args.Tokens, Start = args.StartPosition, Mode = 0, Rule = selection.Rule == BudgetRule.Reference ? 1 : 0, PageSize = 1,
        };
        // Layer 0 of a decode step scores its keys in its dense pass where the fast kernels apply (with the fp32 query:
        // that pass's scores are its output's); denseDone: the output is written.
        var raw = selection.DenseOutput && selection.Precision == ScorePrecision.Exact ? TryDenseDecodeWithScores(args, q, s, extent, output) : null;
        bool denseDone = raw is not null;
        raw ??= TryRawDecodeScores(args, selection.Precision, In(q), s, extent);
        if (raw is { } decode)
        {
            args.CheckPools(selectors);
            PooledDecodeTopK(args, s.Count, selection.Pooling, selectors, decode, parameters, units * selectors, extent);
        }
        else
        {
            var scores = PooledScores(units * selectors, extent);
            parameters.Scores = scores.Pointer;
            // Layer 0 of a prefill chunk hands its dense pass's log-sum-exp to the pooled scores where the Hopper kernels apply.
            denseDone = selection.DenseOutput && s.Count == 1 && selection.Pooling == ScorePooling.PostSoftmax &&
                TryLayerZeroPrefill(args, selection.Precision, selectors, q, s.Cache, scores.Pointer, extent, output);
            if (!denseDone)
            {
                PoolTiles(args, selection.Pooling, selection.Precision, selectors, maxPool: false, q, s, scores.Pointer, extent, extent);
            }
            LaunchTopK(args.HeadDim, parameters, units * selectors, extent);
        }
        p.Serve(args, args.Tokens, _recording is not null);
        if (selection.DenseOutput)
        {
            if (!denseDone && s.Count == 1)
            {
                Attention(args, q, s.Cache, output);
            }
            else if (!denseDone)
            {
                TensorCoreAttention(args, s.Count, q, s.Keys, s.Values, s.Capacity, s.Stride, output);
            }
        }
        else
        {
            // The anchor's output over its own selection takes the scores the selection ranked (exact ones only) and
            // gathers V alone.
            Sparse(args, p, Enumerable.Range(0, args.KvHeads).Select(g => selection.PoolAllHeads ? 0 : g).ToArray(), q, s, output,
                scored: selection.Precision == ScorePrecision.Exact ? raw : null);
        }
    }

    /// <summary>
    /// Each query head of each query over its own Top-k by post-softmax probability: the row's probabilities, a Top-k per
    /// row (mode 1 of <c>select_topk</c>: ties to the lower position, as <see cref="Ranking.TopK"/>), and attention over
    /// the row's own keys, which is the renormalised Top-k of the CPU reference. Groups of queries whose rows fit
    /// <see cref="OracleWorkspaceBytes"/> run one after another.
    /// </summary>
    public void OracleTopKAttention(AttentionArgs args, double topKPercent, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        CheckHeads(args);
        int extent = KeyExtent(args, c);
        // Positions a row's plan holds (at least one slot, so that buffers and strides are never empty).
        int budget = Math.Max(Math.Min(TopKBudget.For(extent, topKPercent), extent), 1);
        nint lse = RowLogSumExp(args, In(q), ScorePrecision.Exact, c, extent);
        long rowBytes = (long)args.Heads * extent * sizeof(float);
        int groupTokens = (int)Math.Clamp(OracleWorkspaceBytes / rowBytes, 1, args.Tokens);
        var probabilities = Scratch(ref _oracleScores, groupTokens * rowBytes);
        var indices = Scratch(ref _oracleIndices, (long)groupTokens * args.Heads * budget * sizeof(int));
        var counts = Scratch(ref _oracleCounts, (long)groupTokens * args.Heads * sizeof(int));
        var module = SelectionModule(args.HeadDim);
        for (int first = 0; first < args.Tokens; first += groupTokens)
        {
            int tokens = Math.Min(groupTokens, args.Tokens - first);
            // Later groups start inside the chunk: their start is a host value (prefill is never recorded).
            var group = args with { Tokens = tokens, StartPosition = args.StartPosition + first, Step = first == 0 ? args.Step : null };
            long rowOffset = (long)first * args.Heads;
            nint queries = In(q) + (nint)(rowOffset * args.HeadDim * sizeof(float));
            RowProbabilities(group, queries, c, lse + (nint)(rowOffset * sizeof(float)), probabilities.Pointer, extent, extent);
            var select = new SelectParams
            {
                Scores = probabilities.Pointer, Indices = indices.Pointer, Counts = counts.Pointer, StartAt = StartOnDevice(group.Step),
                Stride = extent, Percent = topKPercent, RowsPerUnit = args.Heads, Capacity = budget,
                Tokens = tokens, Start = group.StartPosition, Mode = 1, PageSize = 1,
            };
            LaunchTopK(args.HeadDim, select, tokens * args.Heads, extent);
            var attend = SparseArgs(group, CacheSequences.Of(c, args.Layer), queries, Out(output) + (nint)(rowOffset * args.HeadDim * sizeof(float)), indices.Pointer, counts.Pointer, budget, args.Heads, tileUnits: false, groupRows: false);
            for (int h = 0; h < args.Heads; h++)
            {
                attend.HeadMap[h] = h;
            }
            LaunchSparse(group, attend, sequences: 1);
        }
    }

    /// <summary>Units (32-query tiles, or the decode step) of a chunk: <see cref="QueryTile.Of"/>'s count.</summary>
    private static int Units(AttentionArgs args) =>
        args.Tokens == 1 ? 1 : (args.StartPosition + args.Tokens - 1) / TopKBudget.TileSize - args.StartPosition / TopKBudget.TileSize + 1;

    /// <summary>Columns of a chunk's score rows: its keys, or the cache's capacity for a decode step (a recording replays at later positions).</summary>
    private static int KeyExtent(AttentionArgs args, CudaKvCache cache) =>
        args.Tokens == 1 ? cache.Shape.Capacity : args.StartPosition + args.Tokens;

    private static void CheckHeads(AttentionArgs args)
    {
        if (args.Heads > SparseParams.MaxHeads)
        {
            throw new KascadeException($"sparse attention on the GPU supports up to {SparseParams.MaxHeads} query heads; this model has {args.Heads}");
        }
    }

    /// <summary>
    /// The rows' natural-log normalisers over their visible keys, fp32 <c>[Tokens, Heads]</c> in a reused buffer. Few rows
    /// (a decode step) split the keys so that the GPU fills; the split is fixed by <paramref name="extent"/> (the
    /// capacity in decode) so a recorded step replays at later positions.
    /// </summary>
    private nint RowLogSumExp(AttentionArgs args, nint q, ScorePrecision precision, CudaKvCache c, int extent)
    {
        int rows = args.Tokens * args.Heads;
        int splits = rows >= 2 * _device.Multiprocessors ? 1 : Math.Clamp((extent + LseKeysPerSplit - 1) / LseKeysPerSplit, 1, 256);
        int keysPerSplit = (extent + splits - 1) / splits;
        var partial = Scratch(ref _lsePartial, (long)rows * splits * 2 * sizeof(float));
        var lse = Scratch(ref _rowLse, (long)rows * sizeof(float));
        var module = SelectionModule(args.HeadDim);
        Launch(module, "row_log_sum_exp", new Dim3((uint)rows, (uint)splits, 1), 128, q, c.LayerKeys(args.Layer), partial.Pointer,
            args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, StartOnDevice(args.Step), args.Scale, keysPerSplit, precision == ScorePrecision.Bf16 ? 1 : 0);
        CombineLogSumExp(args.HeadDim, partial.Pointer, lse.Pointer, rows, splits);
        return lse.Pointer;
    }

    /// <summary><c>combine_log_sum_exp</c>: fp32 <c>lse [rows]</c> from the (max, sum) pairs <c>partial [rows, splits, 2]</c>, a warp per row.</summary>
    private void CombineLogSumExp(int headDim, nint partial, nint lse, int rows, int splits) =>
        Launch(SelectionModule(headDim), "combine_log_sum_exp", new Dim3((uint)((rows * 32L + 127) / 128), 1, 1), 128, dependent: true, partial, lse, rows, splits);

    /// <summary>Keys a <c>row_log_sum_exp</c> block covers when a decode step's rows are split.</summary>
    private const int LseKeysPerSplit = 2048;

    /// <summary><c>row_probabilities</c> into fp32 <c>[Tokens · Heads, stride]</c>, the first <paramref name="cols"/> columns written.</summary>
    private void RowProbabilities(AttentionArgs args, nint q, CudaKvCache c, nint lse, nint probabilities, long stride, int cols) =>
        Launch(SelectionModule(args.HeadDim), "row_probabilities", new Dim3((uint)(args.Tokens * args.Heads), (uint)((cols + KeysPerBlock - 1) / KeysPerBlock), 1), KeysPerBlock,
            q, c.LayerKeys(args.Layer), lse, probabilities, stride, cols, args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, StartOnDevice(args.Step), args.Scale);

    /// <summary>
    /// <c>pooled_tile_scores</c> (after <c>row_log_sum_exp</c> for post-softmax pooling) over the first <paramref name="extent"/>
    /// keys: each pool's sum, or its largest value when <paramref name="maxPool"/>; scored with the query at <paramref name="precision"/>.
    /// </summary>
    private void PoolTiles(AttentionArgs args, ScorePooling pooling, ScorePrecision precision, int pools, bool maxPool, DeviceTensor q, CacheSequences s, nint scores, long stride, int extent)
    {
        args.CheckPools(pools);
        if (TryPoolDecode(args, pooling, precision, pools, maxPool, In(q), s, scores, stride, extent))
        {
            return;
        }
        s.CheckSingle("pooled scores off the fast decode kernels");
        var c = s.Cache;
        if (TryPoolPrefill(args, pooling, precision, pools, maxPool, In(q), c, scores, stride))
        {
            return;
        }
        var parameters = new PoolParams
        {
            Q = In(q), KCache = c.LayerKeys(args.Layer), Lse = pooling == ScorePooling.PostSoftmax ? RowLogSumExp(args, In(q), precision, c, extent) : 0, Scores = scores,
            StartAt = StartOnDevice(args.Step), Stride = stride, Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads,
            Capacity = c.Shape.Capacity, Start = args.StartPosition, Pools = pools, MaxPool = maxPool ? 1 : 0, RoundQuery = precision == ScorePrecision.Bf16 ? 1 : 0, Scale = args.Scale,
        };
        var grid = new Dim3((uint)(Units(args) * pools), (uint)((extent + KeysPerBlock - 1) / KeysPerBlock), 1);
        LaunchWith(SelectionModule(args.HeadDim).Function("pooled_tile_scores"), "pooled_tile_scores", grid, KeysPerBlock, 0, parameters);
    }

    private CudaModule SelectionModule(int headDim) => PlanModule(_selectionModules, "selection.cu", headDim);

    /// <summary>A source of plan kernels (<c>selection.cu</c>, <c>selectors.cu</c>) specialised by HEAD_DIM, compiled once per head dim.</summary>
    private CudaModule PlanModule(Dictionary<int, CudaModule> modules, string source, int headDim)
    {
        if (headDim % 32 != 0)
        {
            throw new KascadeException($"sparse attention on the GPU needs a head dim that is a multiple of 32, not {headDim}");
        }
        if (!modules.TryGetValue(headDim, out var module))
        {
            module = Module(source, new Dictionary<string, string> { ["HEAD_DIM"] = headDim.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            modules[headDim] = module;
        }
        return module;
    }

    private void DisposeSelectionBuffers()
    {
        _rowLse?.Dispose();
        _lsePartial?.Dispose();
        _tileScores?.Dispose();
        _oracleScores?.Dispose();
        _oracleIndices?.Dispose();
        _oracleCounts?.Dispose();
    }
}
