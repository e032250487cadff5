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

    internal nint PageBounds(int layer) => Memory!.Pointer + (nint)((long)layer * Shape.KvHeads * MaxPages * 2 * Shape.HeadDim * sizeof(ushort));

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
    /// <summary>Threads of a block of <c>page_scores</c> and <c>partial_scores</c> (PAGES_PER_BLOCK).</summary>
    private const int PagesPerBlock = 128;

    private readonly Dictionary<int, CudaModule> _selectorModules = [];
    private DeviceMemory? _selectorScores, _headIndices, _headCounts, _unionFlags;

    public SelectorState AllocateSelectorState(KeySelector selector, KvCacheShape shape, int heads) => new CudaSelectorState(selector, shape, heads);

    public void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state)
    {
        if (state.Selector is not KeySelector.PageTopK quest)
        {
            return;
        }
        var s = (CudaSelectorState)state;
        var c = (CudaKvCache)cache;
        // The pages the chunk touched: one for a decode step, whatever its position.
        int pages = (args.StartPosition + args.Tokens - 1) / quest.PageSize - args.StartPosition / quest.PageSize + 1;
        Launch(SelectorModule(args.HeadDim), "page_bounds", new Dim3((uint)args.KvHeads, (uint)pages, 1), (uint)args.HeadDim,
            c.LayerKeys(args.Layer), s.PageBounds(args.Layer), c.Shape.Capacity, s.MaxPages, quest.PageSize, args.Tokens, args.StartPosition, StartOnDevice(args.Step));
    }

    public void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan)
    {
        var s = (CudaSelectorState)state;
        var p = (CudaKeyPlan)plan;
        var c = (CudaKvCache)cache;
        s.Selector.CheckPlan(args, plan);
        CheckHeads(args);
        var module = SelectorModule(args.HeadDim);
        nint startAt = StartOnDevice(args.Step);
        int extent = KeyExtent(args, c);
        switch (s.Selector)
        {
            case KeySelector.Window window:
                Launch(module, "window_plan", (uint)args.Tokens, 128, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, args.Tokens, args.StartPosition, startAt,
                    window.Sinks, window.Percent, window.MinWindow);
                break;
            case KeySelector.MaxPooledTopK max:
            {
                var scores = Scratch(ref _selectorScores, (long)extent * sizeof(float));
                PoolTiles(args, ScorePooling.PostSoftmax, 1, maxPool: true, q, CacheSequences.Of(c, args.Layer), scores.Pointer, extent, extent);
                SelectRows(args, scores.Pointer, extent, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, rows: 1, max.Percent);
                break;
            }
            case KeySelector.UnionTopK union:
            {
                var scores = Scratch(ref _selectorScores, (long)args.Heads * extent * sizeof(float));
                PoolTiles(args, ScorePooling.PreSoftmax, args.Heads, maxPool: false, q, CacheSequences.Of(c, args.Layer), scores.Pointer, extent, extent);
                int perHead = Math.Max(TopKBudget.For(extent, union.Percent), 1);
                var (indices, counts) = HeadRows(args.Heads, perHead);
                SelectRows(args, scores.Pointer, extent, indices, counts, perHead, args.Heads, union.Percent, recentFraction: union.RecentFraction);
                var flags = Scratch(ref _unionFlags, extent);
                Launch(module, "union_sets", 1, UnionThreads, indices, counts, perHead, args.Heads, flags.Pointer, p.Indices.Pointer, p.Counts.Pointer,
                    union.Sinks, union.Percent, union.RecentFraction, args.StartPosition, startAt);
                break;
            }
            case KeySelector.PageTopK quest:
            {
                var scores = Scratch(ref _selectorScores, (long)args.Heads * s.MaxPages * sizeof(float));
                Launch(module, "page_scores", new Dim3((uint)args.Heads, (uint)((s.MaxPages + PagesPerBlock - 1) / PagesPerBlock), 1), PagesPerBlock,
                    In(q), s.PageBounds(args.Layer), scores.Pointer, (long)s.MaxPages, args.Heads, args.KvHeads, s.MaxPages, quest.PageSize, args.StartPosition, startAt);
                int pageCapacity = Math.Max(p.Capacity / quest.PageSize, 1);
                var (indices, counts) = HeadRows(args.Heads, pageCapacity);
                SelectRows(args, scores.Pointer, s.MaxPages, indices, counts, pageCapacity, args.Heads, quest.Percent, pageSize: quest.PageSize);
                Launch(module, "expand_pages", (uint)args.Heads, 256, indices, counts, pageCapacity, p.Indices.Pointer, p.Counts.Pointer, p.Capacity,
                    quest.PageSize, args.StartPosition, startAt);
                break;
            }
            case KeySelector.PartialScoreTopK sparcas:
            {
                Launch(module, "sparcas_dimensions", (uint)args.Heads, (uint)args.HeadDim, In(q), s.Dimensions(args.Layer), s.Age(args.Layer), s.DimensionCount, sparcas.RefreshSteps);
                var scores = Scratch(ref _selectorScores, (long)args.Heads * extent * sizeof(float));
                Launch(module, "partial_scores", new Dim3((uint)args.Heads, (uint)((extent + PagesPerBlock - 1) / PagesPerBlock), 1), PagesPerBlock,
                    In(q), c.LayerKeys(args.Layer), s.Dimensions(args.Layer), s.Age(args.Layer), scores.Pointer, (long)extent, args.Heads, args.KvHeads,
                    c.Shape.Capacity, s.DimensionCount, args.StartPosition, startAt);
                SelectRows(args, scores.Pointer, extent, p.Indices.Pointer, p.Counts.Pointer, p.Capacity, args.Heads, sparcas.Percent);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(state), s.Selector, "not a key selector the GPU runs");
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
