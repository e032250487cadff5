using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>What a baseline's selector keeps per layer in device memory: quest's page bounds, sparcas's dimensions and their age.</summary>
internal sealed class CudaSelectorState : SelectorState
{
    internal CudaSelectorState(KeySelector selector, KvCacheShape shape, int heads)
        : base(selector, shape, heads)
    {
        switch (selector)
        {
            case KeySelector.PageTopK quest:
                MaxPages = quest.Pages(shape.Capacity);
                // bf16 [layers, kv heads, pages, 2, head dim]: the bounds of bf16 keys are bf16 values, so this is exact.
                Memory = DeviceMemory.Allocate((long)shape.Layers * shape.KvHeads * MaxPages * 2 * shape.HeadDim * sizeof(ushort));
                break;
            case KeySelector.PartialScoreTopK sparcas:
                DimensionCount = sparcas.Dimensions(shape.HeadDim);
                // int32 [layers, heads, count] dimensions, then int32 [layers] ages, all zero: every layer chooses on its first call.
                Memory = DeviceMemory.Allocate((long)shape.Layers * (heads * DimensionCount + 1) * sizeof(int));
                CudaCheck.ThrowIfFailed(Driver.cuMemsetD8_v2(Memory.Pointer, 0, (nuint)Memory.Bytes), "cuMemsetD8");
                break;
        }
    }

    internal DeviceMemory? Memory { get; }

    /// <summary>quest: pages of the cache's capacity.</summary>
    internal int MaxPages { get; }

    /// <summary>sparcas: dimensions per head.</summary>
    internal int DimensionCount { get; }

    /// <summary>quest: bf16 elements of one layer's bounds (a batch's sequences are layers apart).</summary>
    internal long PageBoundsStride => (long)Shape.KvHeads * MaxPages * 2 * Shape.HeadDim;

    internal nint PageBounds(int layer) => Memory!.Pointer + (nint)(layer * PageBoundsStride * sizeof(ushort));

    internal nint Dimensions(int layer) => Memory!.Pointer + (nint)((long)layer * Heads * DimensionCount * sizeof(int));

    internal nint Age(int layer) => Memory!.Pointer + (nint)(((long)Shape.Layers * Heads * DimensionCount + layer) * sizeof(int));

    public override void Dispose() => Memory?.Dispose();
}

/// <summary>
/// The baselines' key selectors on the device (<c>selectors.cu</c>, with <c>selection.cu</c>'s scores and radix Top-k):
/// every budget and page count is computed on the device from the step's position and every buffer is sized for the
/// session's capacity, so a baseline's decode step records as a CUDA graph like Kascade's.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Pages or keys a block of <c>page_scores</c> and <c>partial_scores</c> scores (SCORE_ROWS), for every head of a KV head's group.</summary>
    private const int ScoreRows = 32;

    /// <summary>Threads of a block of <c>page_scores</c> and <c>partial_scores</c> (32 · SCORE_WARPS).</summary>
    private const uint ScoreThreads = 128;

    private readonly Dictionary<int, CudaModule> _selectorModules = [];
    private DeviceMemory? _selectorScores, _headIndices, _headCounts, _unionFlags;

    public SelectorState AllocateSelectorState(KeySelector selector, KvCacheShape shape, int heads) => new CudaSelectorState(selector, shape, heads);

    public void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state) =>
        UpdateState(args, CacheSequences.Of((CudaKvCache)cache, args.Layer), (CudaSelectorState)state);

    /// <summary>
    /// <see cref="UpdateSelectorState"/> for <c>s.Count</c> sequences (a batch's decode steps: sequence b's state is the
    /// state's layer <c>s.Layer + b</c>, <see cref="BatchedUpdateSelectorState"/>): quest's bounds of the pages the chunk touched.
    /// </summary>
    private void UpdateState(AttentionArgs args, CacheSequences s, CudaSelectorState state)
    {
        if (state.Selector is not KeySelector.PageTopK quest)
        {
            return;
        }
        // The pages the chunk touched: one for a decode step, whatever its position.
        int pages = (args.StartPosition + args.Tokens - 1) / quest.PageSize - args.StartPosition / quest.PageSize + 1;
        Launch(SelectorModule(args.HeadDim), "page_bounds", new Dim3((uint)args.KvHeads, (uint)pages, (uint)s.Count), (uint)args.HeadDim,
            s.Keys, state.PageBounds(s.Layer), s.Capacity, state.MaxPages, quest.PageSize, args.Tokens, args.StartPosition, StartOnDevice(args.Step),
            s.Stride, state.PageBoundsStride);
    }

    public void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan)
    {
        state.Selector.CheckPlan(args, plan);
        Select(args, q, CacheSequences.Of((CudaKvCache)cache, args.Layer), (CudaSelectorState)state, (CudaKeyPlan)plan);
    }

    /// <summary>
    /// <see cref="SelectKeys"/> for <c>s.Count</c> sequences (a batch's decode steps, <see cref="BatchedSelectKeys"/>):
    /// sequence b's queries are rows <c>b · Heads …</c> of q, its state the state's layer <c>s.Layer + b</c>, its plan
    /// rows unit b's. A batch's score and Top-k rows are its sequences' rows one after another (per-head rows:
    /// <c>headRows</c> = sequences · Heads), every one at the step's position (the Top-k's rows per unit are all of
    /// them, so each sees <c>StartPosition + 1</c> keys).
    /// </summary>
    private void Select(AttentionArgs args, DeviceTensor q, CacheSequences c, CudaSelectorState s, CudaKeyPlan p)
    {
        CheckHeads(args);
        var module = SelectorModule(args.HeadDim);
        nint startAt = StartOnDevice(args.Step);
        int extent = KeyExtent(args, c.Cache), sequences = c.Count, headRows = sequences * args.Heads;
        switch (s.Selector)
        {
            case KeySelector.Window window:
                Launch(module, "window_plan", (uint)(args.Tokens * sequences), 128, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, sequences > 1 ? 0 : 1,
                    args.StartPosition, startAt, window.Sinks, window.Percent, window.MinWindow);
                break;
            case KeySelector.MaxPooledTopK max:
            {
                var scores = Scratch(ref _selectorScores, (long)sequences * extent * sizeof(float));
                PoolTiles(args, ScorePooling.PostSoftmax, ScorePrecision.Exact, 1, maxPool: true, q, c, scores.Pointer, extent, extent);
                SelectRows(args, scores.Pointer, extent, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, rows: sequences, max.Percent);
                break;
            }
            case KeySelector.UnionTopK union:
            {
                var scores = Scratch(ref _selectorScores, (long)headRows * extent * sizeof(float));
                PoolTiles(args, ScorePooling.PreSoftmax, ScorePrecision.Exact, args.Heads, maxPool: false, q, c, scores.Pointer, extent, extent);
                int perHead = Math.Max(TopKBudget.For(extent, union.Percent), 1);
                var (indices, counts) = HeadRows(headRows, perHead);
                SelectRows(args, scores.Pointer, extent, indices, counts, perHead, headRows, union.Percent, recentFraction: union.RecentFraction);
                var flags = Scratch(ref _unionFlags, (long)sequences * extent);
                Launch(module, "union_sets", (uint)sequences, UnionThreads, indices, counts, perHead, args.Heads, flags.Pointer, p.Indices.Pointer, p.Counts.Pointer,
                    union.Sinks, union.Percent, union.RecentFraction, args.StartPosition, startAt, (long)extent, p.Capacity);
                break;
            }
            case KeySelector.PageTopK quest:
            {
                var scores = Scratch(ref _selectorScores, (long)headRows * s.MaxPages * sizeof(float));
                Launch(module, "page_scores", new Dim3((uint)((s.MaxPages + ScoreRows - 1) / ScoreRows), (uint)args.KvHeads, (uint)sequences), ScoreThreads,
                    In(q), s.PageBounds(c.Layer), scores.Pointer, (long)s.MaxPages, args.Heads, args.KvHeads, s.MaxPages, quest.PageSize, args.StartPosition, startAt,
                    s.PageBoundsStride);
                int pageCapacity = Math.Max(p.Capacity / quest.PageSize, 1);
                var (indices, counts) = HeadRows(headRows, pageCapacity);
                SelectRows(args, scores.Pointer, s.MaxPages, indices, counts, pageCapacity, headRows, quest.Percent, pageSize: quest.PageSize);
                Launch(module, "expand_pages", (uint)headRows, 256, indices, counts, pageCapacity, p.Indices.Pointer, p.Counts.Pointer, p.Capacity,
                    quest.PageSize, args.StartPosition, startAt);
                break;
            }
            case KeySelector.PartialScoreTopK sparcas:
            {
                Launch(module, "sparcas_dimensions", new Dim3((uint)args.Heads, (uint)sequences, 1), (uint)args.HeadDim, In(q), s.Dimensions(c.Layer), s.Age(c.Layer),
                    s.DimensionCount, sparcas.RefreshSteps);
                var scores = Scratch(ref _selectorScores, (long)headRows * extent * sizeof(float));
                Launch(module, "partial_scores", new Dim3((uint)((extent + ScoreRows - 1) / ScoreRows), (uint)args.KvHeads, (uint)sequences), ScoreThreads,
                    In(q), c.Keys, s.Dimensions(c.Layer), s.Age(c.Layer), scores.Pointer, (long)extent, args.Heads, args.KvHeads,
                    c.Capacity, s.DimensionCount, args.StartPosition, startAt, c.Stride);
                SelectRows(args, scores.Pointer, extent, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, headRows, sparcas.Percent);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(s), s.Selector, "not a key selector the GPU runs");
        }
        p.Serve(args, args.Tokens, _recording is not null);
    }

    /// <summary><c>union_sets</c>'s block (UNION_THREADS).</summary>
    private const uint UnionThreads = 1024;

    /// <summary>
    /// A decode step's Top-k of each of <paramref name="rows"/> score rows (mode 1 of <c>select_topk</c>): the budget of
    /// its visible keys, less <paramref name="recentFraction"/> of it, over keys or pages of <paramref name="pageSize"/>.
    /// </summary>
    private void SelectRows(AttentionArgs args, nint scores, long stride, nint indices, nint counts, int capacity, int rows, double percent, int pageSize = 1, double recentFraction = 0)
    {
        var parameters = new SelectParams
        {
            Scores = scores, Indices = indices, Counts = counts, StartAt = StartOnDevice(args.Step), Stride = stride, Percent = percent,
            RowsPerUnit = rows, Capacity = capacity, Tokens = 1, Start = args.StartPosition, Mode = 1, PageSize = pageSize, RecentFraction = recentFraction,
        };
        LaunchTopK(args.HeadDim, parameters, rows, (int)stride);
    }

    /// <summary>Scratch per-head rows int32 <c>[heads, capacity]</c> and counts <c>[heads]</c> for a selector's intermediate Top-k.</summary>
    private (nint Indices, nint Counts) HeadRows(int heads, int capacity) =>
        (Scratch(ref _headIndices, (long)heads * capacity * sizeof(int)).Pointer, Scratch(ref _headCounts, (long)heads * sizeof(int)).Pointer);

    private CudaModule SelectorModule(int headDim) => PlanModule(_selectorModules, "selectors.cu", headDim);

    private void DisposeSelectorBuffers()
    {
        _selectorScores?.Dispose();
        _headIndices?.Dispose();
        _headCounts?.Dispose();
        _unionFlags?.Dispose();
    }
}
