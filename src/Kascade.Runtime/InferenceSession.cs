using Kascade.Core;

namespace Kascade.Runtime;

/// <summary>
/// One sequence being run through a <see cref="LlamaModel"/>: its KV cache, its position, and activation
/// buffers allocated once for the largest chunk, so prefill chunks and decode steps allocate nothing.
/// </summary>
public sealed class InferenceSession : IDisposable
{
    private readonly LlamaModel _model;
    private readonly IBackend _b;
    private readonly KvCache _cache;
    private readonly DeviceTensor _x, _h, _q, _k, _v, _attn, _gate, _up, _lastHidden, _lastLogits;
    private readonly AttentionPolicy _policy;
    private readonly ILayerObserver? _observer;
    private readonly Baselines.BaselineAttention? _baseline;
    private DeviceTensor? _allLogits;

    internal InferenceSession(LlamaModel model, int capacity, int maxChunk, AttentionPolicy policy, ILayerObserver? observer)
    {
        _model = model;
        _b = model.Backend;
        _policy = policy;
        _observer = observer;
        var c = model.Config;
        _baseline = policy.IsBaseline ? new Baselines.BaselineAttention(policy, c) : null;
        Capacity = capacity;
        MaxChunk = maxChunk;
        _b.SetRope(c.Rope, c.HeadDim, capacity);
        _cache = _b.AllocateKvCache(new KvCacheShape(c.Layers, c.KvHeads, c.HeadDim, capacity));
        _x = _b.Allocate(maxChunk, c.HiddenSize);
        _h = _b.Allocate(maxChunk, c.HiddenSize);
        _q = _b.Allocate(maxChunk, c.QDim);
        _k = _b.Allocate(maxChunk, c.KvDim);
        _v = _b.Allocate(maxChunk, c.KvDim);
        _attn = _b.Allocate(maxChunk, c.QDim);
        _gate = _b.Allocate(maxChunk, c.IntermediateSize);
        _up = _b.Allocate(maxChunk, c.IntermediateSize);
        _lastHidden = _b.Allocate(1, c.HiddenSize);
        _lastLogits = _b.Allocate(1, c.VocabSize);
    }

    /// <summary>Positions already in the KV cache.</summary>
    public int Position { get; private set; }

    public int Capacity { get; }

    public int MaxChunk { get; }

    /// <summary>
    /// Runs <paramref name="ids"/> (at most <see cref="MaxChunk"/>) at the next positions and writes the logits of the
    /// last one to <paramref name="lastLogits"/> (<c>[vocab]</c>).
    /// </summary>
    public void Forward(ReadOnlySpan<int> ids, Span<float> lastLogits)
    {
        var hidden = RunLayers(ids);
        var c = _model.Config;
        _b.RmsNorm(hidden.Slice(ids.Length - 1, 1), _model.FinalNorm, c.HiddenSize, (float)c.RmsNormEps, _lastHidden);
        _b.MatMul(_lastHidden, _model.LmHead, null, _lastLogits);
        _b.Read(_lastLogits, lastLogits);
    }

    /// <summary>
    /// Runs <paramref name="ids"/> (any length that fits the session) in chunks of <see cref="MaxChunk"/>, writing the
    /// logits of the last token to <paramref name="lastLogits"/>; <paramref name="onChunk"/> gets the tokens done so far.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> ids, Span<float> lastLogits, Action<int>? onChunk = null)
    {
        for (int start = 0; start < ids.Length; start += MaxChunk)
        {
            int n = Math.Min(MaxChunk, ids.Length - start);
            Forward(ids.Slice(start, n), lastLogits);
            onChunk?.Invoke(start + n);
        }
    }

    /// <summary>Like <see cref="Forward"/> but returns the logits of every position, <c>[ids.Length, vocab]</c> row-major.</summary>
    public float[] ForwardAll(ReadOnlySpan<int> ids)
    {
        var c = _model.Config;
        var hidden = RunLayers(ids);
        _allLogits ??= _b.Allocate(MaxChunk, c.VocabSize);
        var h = _h.Take(ids.Length);
        var logits = _allLogits.Take(ids.Length);
        _b.RmsNorm(hidden, _model.FinalNorm, c.HiddenSize, (float)c.RmsNormEps, h);
        _b.MatMul(h, _model.LmHead, null, logits);
        var result = new float[ids.Length * c.VocabSize];
        _b.Read(logits, result);
        return result;
    }

    private DeviceTensor RunLayers(ReadOnlySpan<int> ids)
    {
        int n = ids.Length;
        if (n == 0 || n > MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(ids), $"a chunk holds 1 to {MaxChunk} tokens, not {n}");
        }
        if (Position + n > Capacity)
        {
            throw new KascadeException($"the sequence would reach {Position + n} positions; this session holds {Capacity}");
        }
        var c = _model.Config;
        float eps = (float)c.RmsNormEps;
        DeviceTensor x = _x.Take(n), h = _h.Take(n), q = _q.Take(n), k = _k.Take(n), v = _v.Take(n);
        DeviceTensor attn = _attn.Take(n), gate = _gate.Take(n), up = _up.Take(n);
        _b.Embed(ids, _model.Embedding, x);
        var attention = new AttentionArgs(0, n, Position, c.Heads, c.KvHeads, c.HeadDim, c.AttentionScale);
        AttentionPlan? plan = null;
        for (int l = 0; l < c.Layers; l++)
        {
            var w = _model.Layers[l];
            _b.RmsNorm(x, w.InputNorm, c.HiddenSize, eps, h);
            _b.MatMul(h, w.Q, w.QBias, q);
            _b.MatMul(h, w.K, w.KBias, k);
            _b.MatMul(h, w.V, w.VBias, v);
            if (w.QNorm is not null && w.KNorm is not null)
            {
                // Qwen3 normalises each head's q and k before the rotation.
                _b.RmsNorm(q, w.QNorm, c.HeadDim, eps, q);
                _b.RmsNorm(k, w.KNorm, c.HeadDim, eps, k);
            }
            _b.ApplyRope(q, new RopeArgs(c.Heads, c.HeadDim, Position));
            _b.ApplyRope(k, new RopeArgs(c.KvHeads, c.HeadDim, Position));
            _b.AppendKv(_cache, l, Position, k, v);
            plan = Attend(attention with { Layer = l }, q, attn, plan);
            _b.MatMul(attn, w.O, w.OBias, h);
            _observer?.OnAttention(new LayerObservation(l, Position, n, _b, x, q, _cache, h));
            _b.Add(x, h);
            _b.RmsNorm(x, w.PostAttentionNorm, c.HiddenSize, eps, h);
            _b.MatMul(h, w.Gate, null, gate);
            _b.MatMul(h, w.Up, null, up);
            _b.SwiGlu(gate, up);
            _b.MatMul(gate, w.Down, null, h);
            _b.Add(x, h);
        }
        Position += n;
        return x;
    }

    /// <summary>
    /// One layer's attention under the session's policy; returns the plan the following reuse layers read
    /// (the latest anchor's). Layer 0 is always dense and always the first anchor (DESIGN §3).
    /// </summary>
    private AttentionPlan? Attend(AttentionArgs args, DeviceTensor q, DeviceTensor output, AttentionPlan? plan)
    {
        switch (_policy.Method)
        {
            case AttentionMethod.Dense:
                _b.Attention(args, q, _cache, output);
                return plan;
            case AttentionMethod.OracleTopK:
                _b.OracleTopKAttention(args, _policy.TopKPercent, q, _cache, output);
                return plan;
        }
        if (_baseline is not null)
        {
            _baseline.Attend(_b, args, q, _cache, output);
            return plan;
        }
        switch (_policy.RoleOf(args.Layer))
        {
            case LayerRole.Anchor:
                var selection = new SelectionArgs(_policy.TopKPercent, _policy.Pooling, _policy.Method == AttentionMethod.KascadePooled, DenseOutput: args.Layer == 0);
                return _b.AnchorAttention(args, selection, q, _cache, output);
            case LayerRole.Reuse reuse:
                if (plan is null || plan.Layer != reuse.AnchorLayer)
                {
                    throw new InvalidOperationException($"layer {args.Layer} reuses anchor {reuse.AnchorLayer}, but the latest plan is from layer {plan?.Layer}");
                }
                _b.ReuseAttention(args, plan, reuse.HeadMap, q, _cache, output);
                return plan;
            default:
                _b.Attention(args, q, _cache, output);
                return plan;
        }
    }

    public void Dispose()
    {
        foreach (var t in new[] { _x, _h, _q, _k, _v, _attn, _gate, _up, _lastHidden, _lastLogits, _allLogits })
        {
            t?.Dispose();
        }
        _cache.Dispose();
    }
}
