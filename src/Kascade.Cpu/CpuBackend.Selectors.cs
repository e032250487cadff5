using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>What a baseline's selector keeps per layer on the CPU: quest's page bounds, sparcas's dimensions and their age.</summary>
internal sealed class CpuSelectorState(KeySelector selector, KvCacheShape shape, int heads) : SelectorState(selector, shape, heads)
{
    /// <summary>quest: per layer and KV head, fp32 <c>[pages, HeadDim]</c> minima and maxima (allocated when a layer first updates).</summary>
    public float[]?[] PageMin { get; } = new float[shape.Layers * shape.KvHeads][];

    public float[]?[] PageMax { get; } = new float[shape.Layers * shape.KvHeads][];

    /// <summary>sparcas: per layer and query head, the scored dimensions (ascending); <c>[Layers · Heads][count]</c>.</summary>
    public int[][] Dimensions { get; } = new int[shape.Layers * heads][];

    /// <summary>sparcas: selections made per layer; dimensions are chosen again when it is a multiple of the refresh steps.</summary>
    public int[] Age { get; } = new int[shape.Layers];

    public override void Dispose()
    {
    }
}

/// <summary>The baselines' key selectors on the CPU (DESIGN §4): the reference the GPU's are checked against.</summary>
public sealed partial class CpuBackend
{
    public SelectorState AllocateSelectorState(KeySelector selector, KvCacheShape shape, int heads) => new CpuSelectorState(selector, shape, heads);

    public void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state)
    {
        if (state.Selector is not KeySelector.PageTopK quest)
        {
            return;
        }
        var s = (CpuSelectorState)state;
        var c = (CpuKvCache)cache;
        int d = args.HeadDim, n = args.StartPosition + args.Tokens, pages = quest.Pages(c.Shape.Capacity);
        for (int g = 0; g < args.KvHeads; g++)
        {
            int at = args.Layer * args.KvHeads + g;
            var min = s.PageMin[at] ??= new float[pages * d];
            var max = s.PageMax[at] ??= new float[pages * d];
            BaselineSelection.WritePageBounds(KeysOf(c, args.Layer, g, n), n, d, quest.PageSize, args.StartPosition / quest.PageSize, min, max);
        }
    }

    public void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan)
    {
        var s = (CpuSelectorState)state;
        var p = (CpuKeyPlan)plan;
        var c = (CpuKvCache)cache;
        var qs = (CpuTensor)q;
        s.Selector.CheckPlan(args, plan);
        int n = args.StartPosition + args.Tokens, d = args.HeadDim, group = args.Heads / args.KvHeads;
        ReadOnlySpan<float> Query(int head) => qs.Row(0).Slice(head * d, d);
        switch (s.Selector)
        {
            case KeySelector.Window window:
                for (int t = 0; t < args.Tokens; t++)
                {
                    p.Write(t, BaselineSelection.StreamingWindow(args.StartPosition + t + 1, window));
                }
                break;
            case KeySelector.MaxPooledTopK max:
                p.Write(0, BaselineSelection.MaxPooledTopK(HeadScores(args, c, qs, n, softmax: true), n, TopKBudget.For(n, max.Percent)));
                break;
            case KeySelector.UnionTopK union:
                p.Write(0, BaselineSelection.LessIsMoreSet(HeadScores(args, c, qs, n, softmax: false), n, TopKBudget.For(n, union.Percent), union));
                break;
            case KeySelector.PageTopK quest:
                for (int h = 0; h < args.Heads; h++)
                {
                    int at = args.Layer * args.KvHeads + h / group;
                    var bounds = (s.PageMin[at] ?? throw NoBounds(args.Layer), s.PageMax[at]!);
                    p.Write(h, BaselineSelection.QuestPages(Query(h), bounds, n, quest.PageSize, TopKBudget.For(n, quest.Percent)));
                }
                break;
            case KeySelector.PartialScoreTopK partial:
                bool refresh = s.Age[args.Layer]++ % partial.RefreshSteps == 0;
                for (int h = 0; h < args.Heads; h++)
                {
                    ref var dims = ref s.Dimensions[args.Layer * args.Heads + h];
                    if (refresh)
                    {
                        dims = BaselineSelection.LargestDimensions(Query(h), partial.Dimensions(d));
                    }
                    p.Write(h, BaselineSelection.PartialScoreTopK(Query(h), dims, KeysOf(c, args.Layer, h / group, n), n, TopKBudget.For(n, partial.Percent)));
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(state), s.Selector, "not a key selector the CPU runs");
        }
        p.Serve(args, args.Tokens, recording: false);
    }

    private static InvalidOperationException NoBounds(int layer) =>
        new($"layer {layer} has no page bounds: UpdateSelectorState runs after every AppendKv of a layer that selects");

    /// <summary>The first <paramref name="n"/> keys of one KV head of one layer, fp32 <c>[n, HeadDim]</c>.</summary>
    private static ReadOnlySpan<float> KeysOf(CpuKvCache c, int layer, int kvHead, int n) =>
        c.Keys[layer].AsSpan(kvHead * c.Shape.Capacity * c.Shape.HeadDim, n * c.Shape.HeadDim);

    /// <summary>A decode query's scaled scores over the <paramref name="n"/> visible keys, per query head, as probabilities when <paramref name="softmax"/>.</summary>
    private static float[][] HeadScores(AttentionArgs args, CpuKvCache c, CpuTensor qs, int n, bool softmax)
    {
        int d = args.HeadDim, group = args.Heads / args.KvHeads;
        var rows = new float[args.Heads][];
        for (int h = 0; h < args.Heads; h++)
        {
            rows[h] = new float[n];
            ScaledScores(qs.Row(0).Slice(h * d, d), c.Keys[args.Layer], h / group, c.Shape.Capacity, d, args.Scale, rows[h]);
            if (softmax)
            {
                TensorPrimitives.SoftMax(rows[h], rows[h]);
            }
        }
        return rows;
    }
}
