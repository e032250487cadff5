using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Runtime.Baselines;

/// <summary>
/// One session's baseline attention (DESIGN §4): picks each layer's key sets from the queries and the cached keys
/// on the host (<see cref="BaselineSelection"/>) and runs <see cref="IBackend.SelectedAttention"/>. Holds the state
/// that spans layers and steps: the set a filter or selection layer shares with the layers after it, and sparcas's
/// dimension sets with their age. Decode-only methods attend densely in prefill.
/// </summary>
internal sealed class BaselineAttention(AttentionPolicy policy, ModelConfig config)
{
    private readonly BaselineOptions _o = policy.Baselines;
    private readonly int[]?[] _dimensions = new int[config.Layers * config.Heads][];
    private readonly int[] _dimensionAge = new int[config.Layers];
    private int[]? _shared;
    private float[] _q = [];
    private float[] _keys = [];

    public void Attend(IBackend b, AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        if (policy.Method == AttentionMethod.StreamingLlm)
        {
            var window = new KeySelection(args.Tokens, args.Heads);
            for (int t = 0; t < args.Tokens; t++)
            {
                window.SetAllHeads(t, BaselineSelection.StreamingWindow(args.StartPosition + t + 1, _o));
            }
            b.SelectedAttention(args, window, q, cache, output);
            return;
        }
        if (args.Tokens > 1)
        {
            b.Attention(args, q, cache, output);
            return;
        }
        if (args.Layer == 0)
        {
            _shared = null;
        }
        var mode = BaselineSelection.ModeOf(policy.Method, _o, args.Layer);
        if (mode == BaselineLayerMode.Dense)
        {
            b.Attention(args, q, cache, output);
            return;
        }
        int n = args.StartPosition + 1, d = args.HeadDim, group = args.Heads / args.KvHeads;
        int budget = TopKBudget.For(n, policy.TopKPercent);
        ReadHost(b, args, q, cache, n);
        if (mode == BaselineLayerMode.DenseAndSelect)
        {
            b.Attention(args, q, cache, output);
            var scores = Enumerable.Range(0, args.Heads).Select(h => ScaledScores(h, h / group, n, d, args.Scale)).ToArray();
            if (policy.Method == AttentionMethod.OmniKv)
            {
                foreach (var row in scores)
                {
                    TensorPrimitives.SoftMax(row, row);
                }
                _shared = BaselineSelection.MaxPooledTopK(scores, n, budget);
            }
            else
            {
                _shared = BaselineSelection.LessIsMoreSet(scores, n, budget, _o);
            }
            return;
        }
        var selection = new KeySelection(1, args.Heads);
        switch (policy.Method)
        {
            case AttentionMethod.OmniKv or AttentionMethod.LessIsMore:
                selection.SetAllHeads(0, _shared ?? throw new InvalidOperationException($"layer {args.Layer} has no set from a selection layer"));
                break;
            case AttentionMethod.Quest:
                for (int g = 0; g < args.KvHeads; g++)
                {
                    var bounds = BaselineSelection.PageBounds(KeysOf(g, n, d), n, d, _o.QuestPageSize);
                    for (int h = g * group; h < (g + 1) * group; h++)
                    {
                        selection[0, h] = BaselineSelection.QuestPages(_q.AsSpan(h * d, d), bounds, n, _o.QuestPageSize, budget);
                    }
                }
                break;
            case AttentionMethod.SparCas:
                bool refresh = _dimensionAge[args.Layer] % _o.SparCasRefreshSteps == 0;
                _dimensionAge[args.Layer]++;
                int count = Math.Max(1, (int)Math.Round(_o.SparCasDimensionFraction * d));
                for (int h = 0; h < args.Heads; h++)
                {
                    ref var dims = ref _dimensions[args.Layer * args.Heads + h];
                    if (refresh || dims is null)
                    {
                        dims = BaselineSelection.LargestDimensions(_q.AsSpan(h * d, d), count);
                    }
                    selection[0, h] = BaselineSelection.PartialScoreTopK(_q.AsSpan(h * d, d), dims, KeysOf(h / group, n, d), n, budget);
                }
                break;
        }
        b.SelectedAttention(args, selection, q, cache, output);
    }

    private void ReadHost(IBackend b, AttentionArgs args, DeviceTensor q, KvCache cache, int n)
    {
        int qLength = args.Heads * args.HeadDim, keysLength = args.KvHeads * n * args.HeadDim;
        if (_q.Length < qLength)
        {
            _q = new float[qLength];
        }
        if (_keys.Length < keysLength)
        {
            _keys = new float[Math.Max(keysLength, _keys.Length * 2)];
        }
        b.Read(q, _q.AsSpan(0, qLength));
        b.ReadKeys(cache, args.Layer, n, _keys.AsSpan(0, keysLength));
    }

    private ReadOnlySpan<float> KeysOf(int kvHead, int n, int d) => _keys.AsSpan(kvHead * n * d, n * d);

    private float[] ScaledScores(int head, int kvHead, int n, int d, float scale)
    {
        var query = _q.AsSpan(head * d, d);
        var keys = KeysOf(kvHead, n, d);
        var scores = new float[n];
        for (int j = 0; j < n; j++)
        {
            scores[j] = scale * TensorPrimitives.Dot(query, keys.Slice(j * d, d));
        }
        return scores;
    }
}
