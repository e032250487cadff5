using Kascade.Core;
using Kascade.Runtime.Diagnostics;

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

    /// <summary>What each layer runs under the policy, with the plans and selector state it keeps on the backend.</summary>
    private readonly Attention.LayerAttention _attention;
    private readonly StepInputs _step;
    private DeviceTensor? _allLogits;
    /// <summary>The recorded decode step of each of the policy's step variants (<see cref="Attention.LayerAttention.BeginStep"/>), stamped with the sampling it was recorded for.</summary>
    private readonly RecordedSteps<int> _recorded;
    private bool _sampled;

    /// <summary>Every token run so far (prompt, then each decoded one), for <see cref="NonFiniteProbe"/>.</summary>
    private readonly List<int> _tokens = [];
    private int _lastToken;

    internal InferenceSession(LlamaModel model, int capacity, int maxChunk, AttentionPolicy policy, ILayerObserver? observer)
    {
        _model = model;
        _b = model.Backend;
        _recorded = new RecordedSteps<int>(_b.Record);
        _policy = policy;
        _observer = observer;
        var c = model.Config;
        Capacity = capacity;
        MaxChunk = maxChunk;
        _b.SetRope(c.Rope, c.HeadDim, capacity);
        _cache = _b.AllocateKvCache(new KvCacheShape(c.Layers, c.KvHeads, c.HeadDim, capacity));
        _attention = Attention.LayerAttention.Open(policy, _b, c, capacity, maxChunk);
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
        _step = _b.AllocateStepInputs(maxChunk);
    }

    /// <summary>Positions already in the KV cache.</summary>
    public int Position { get; private set; }

    public int Capacity { get; }

    public int MaxChunk { get; }

    /// <summary>True for <see cref="NonFiniteProbe"/>'s own session, which reports non-finite logits without probing again.</summary>
    internal bool IsProbe { get; init; }

    /// <summary>
    /// Runs <paramref name="ids"/> (at most <see cref="MaxChunk"/>) at the next positions and writes the logits of the
    /// last one to <paramref name="lastLogits"/> (<c>[vocab]</c>).
    /// </summary>
    public void Forward(ReadOnlySpan<int> ids, Span<float> lastLogits)
    {
        var hidden = RunChunk(ids);
        _b.Read(LastLogits(hidden), lastLogits);
        Position += ids.Length;
        _sampled = false;
        CheckFinite(lastLogits);
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

    /// <summary>
    /// Runs <paramref name="ids"/> like <see cref="Prefill(ReadOnlySpan{int}, Span{float}, Action{int}?)"/> and samples
    /// the next token on the backend (<see cref="Sampling"/>); <see cref="Decode"/> continues from it.
    /// </summary>
    public int Prefill(ReadOnlySpan<int> ids, SamplingOptions sampling, Action<int>? onChunk = null)
    {
        sampling.Check();
        if (ids.IsEmpty)
        {
            throw new ArgumentException("nothing to prefill", nameof(ids));
        }
        for (int start = 0; start < ids.Length; start += MaxChunk)
        {
            int n = Math.Min(MaxChunk, ids.Length - start);
            var hidden = RunChunk(ids.Slice(start, n));
            if (start + n == ids.Length)
            {
                SampleNext(hidden, n, sampling);
            }
            Position += n;
            onChunk?.Invoke(start + n);
        }
        _sampled = true;
        return ReadToken();
    }

    /// <summary>
    /// Runs the token sampled last (by <see cref="Prefill(ReadOnlySpan{int}, SamplingOptions, Action{int}?)"/> or the
    /// previous Decode) and samples the next one. Where the backend records (CUDA graphs) the step is recorded once and
    /// replayed with the token, position and draw read on the device; it is recorded again when a launch plan it fixed
    /// changes with the position or the sampling options change.
    /// </summary>
    public int Decode(SamplingOptions sampling)
    {
        if (!_sampled)
        {
            throw new InvalidOperationException("Decode continues from a sampled token: call Prefill with sampling options first");
        }
        if (Position >= Capacity)
        {
            throw new KascadeException($"the sequence would reach {Position + 1} positions; this session holds {Capacity}");
        }
        _tokens.Add(_lastToken);
        int variant = _attention.BeginStep(1, Position);
        if (_observer is not null)
        {
            // The observer reads intermediates on the host as each layer runs: a step that waits for the host cannot be recorded.
            DecodeStep(sampling);
        }
        else
        {
            sampling.Check();
            _recorded.Run(variant, Position, () => DecodeStep(sampling), stamp: sampling);
        }
        Position++;
        return ReadToken();
    }

    /// <summary>Like <see cref="Forward"/> but returns the logits of every position, <c>[ids.Length, vocab]</c> row-major.</summary>
    public float[] ForwardAll(ReadOnlySpan<int> ids)
    {
        var c = _model.Config;
        var hidden = RunChunk(ids);
        _allLogits ??= _b.Allocate(MaxChunk, c.VocabSize);
        var h = _h.Take(ids.Length);
        var logits = _allLogits.Take(ids.Length);
        _b.RmsNorm(hidden, _model.FinalNorm, c.HiddenSize, (float)c.RmsNormEps, h);
        _b.MatMul(h, _model.LmHead, null, logits);
        var result = new float[ids.Length * c.VocabSize];
        _b.Read(logits, result);
        Position += ids.Length;
        _sampled = false;
        CheckFinite(result, ids.Length);
        return result;
    }

    /// <summary>One decode token: the step's token at the step's position, then the next token sampled into the step.</summary>
    private void DecodeStep(SamplingOptions sampling) => SampleNext(RunLayers(1), 1, sampling);

    /// <summary>
    /// Host logits of the last <paramref name="rows"/> positions run (<c>[rows, vocab]</c>): any NaN or infinity is an
    /// error naming the first position that has one (<see cref="NonFinite"/>).
    /// </summary>
    private void CheckFinite(ReadOnlySpan<float> logits, int rows = 1)
    {
        int vocab = logits.Length / rows;
        for (int r = 0; r < rows; r++)
        {
            if (!float.IsFinite(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(logits.Slice(r * vocab, vocab))))   // NaN propagates
            {
                throw NonFinite(Position - rows + r);
            }
        }
    }

    /// <summary>
    /// The error for non-finite logits at <paramref name="position"/>: cheap by default, and with the first layer where
    /// non-finite values appear when the model asks for it (<see cref="LlamaModel.LocateNonFinite"/>).
    /// </summary>
    private NonFiniteLogitsException NonFinite(int position)
    {
        _sampled = false;   // the step holds no token to continue from
        string at = $"the model produced NaN or infinite logits at position {position}";
        if (!_model.LocateNonFinite || IsProbe)
        {
            return new NonFiniteLogitsException($"{at} (the checkpoint or config.json is broken; --verbose finds the first layer where they appear)");
        }
        try
        {
            return new NonFiniteLogitsException($"{at}; they first appear in {NonFiniteProbe.Locate(_model, _tokens, _policy, MaxChunk, Capacity)} (the checkpoint or config.json is broken)");
        }
        catch (Exception e) when (e is KascadeException or OutOfMemoryException)
        {
            // The probe needs a second KV cache; without the memory for it the cheap message still stands.
            return new NonFiniteLogitsException($"{at} (the checkpoint or config.json is broken; locating the layer failed: {e.Message})");
        }
    }

    /// <summary>Samples the token after the last of the <paramref name="tokens"/> rows of <paramref name="hidden"/> into the step and moves the step past them.</summary>
    private void SampleNext(DeviceTensor hidden, int tokens, SamplingOptions sampling)
    {
        _b.Sample(LastLogits(hidden), sampling, _step);
        _b.Advance(_step, tokens);
    }

    private int ReadToken()
    {
        Span<int> token = stackalloc int[1];
        _b.ReadTokens(_step, token);
        _lastToken = token[0];
        return token[0] != Sampling.NonFinite ? token[0] : throw NonFinite(Position - 1);
    }

    /// <summary>The logits of the last row of <paramref name="hidden"/>, <c>[1, vocab]</c> on the backend.</summary>
    private DeviceTensor LastLogits(DeviceTensor hidden)
    {
        var c = _model.Config;
        _b.RmsNorm(hidden.Slice(hidden.Rows - 1, 1), _model.FinalNorm, c.HiddenSize, (float)c.RmsNormEps, _lastHidden);
        _b.MatMul(_lastHidden, _model.LmHead, null, _lastLogits);
        return _lastLogits;
    }

    /// <summary>Checks <paramref name="ids"/>, writes them and the position into the step, and runs the layers over them.</summary>
    private DeviceTensor RunChunk(ReadOnlySpan<int> ids)
    {
        int n = ids.Length, vocab = _model.Config.VocabSize;
        if (n == 0 || n > MaxChunk)
        {
            throw new ArgumentOutOfRangeException(nameof(ids), $"a chunk holds 1 to {MaxChunk} tokens, not {n}");
        }
        if (Position + n > Capacity)
        {
            throw new KascadeException($"the sequence would reach {Position + n} positions; this session holds {Capacity}");
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)vocab)
            {
                throw new KascadeException($"token id {id} is outside the vocabulary of {vocab}");
            }
        }
        _b.WriteStep(_step, ids, Position);
        _tokens.AddRange(ids);
        _attention.BeginStep(n, Position);
        return RunLayers(n);
    }

    /// <summary>The layers over the step's <paramref name="n"/> tokens at <see cref="Position"/>; returns the residual stream.</summary>
    private DeviceTensor RunLayers(int n)
    {
        var c = _model.Config;
        float eps = (float)c.RmsNormEps;
        DeviceTensor x = _x.Take(n), h = _h.Take(n), q = _q.Take(n), k = _k.Take(n), v = _v.Take(n);
        DeviceTensor attn = _attn.Take(n), gate = _gate.Take(n), up = _up.Take(n);
        _b.Embed(_step, _model.Embedding, x);
        var attention = new AttentionArgs(0, n, Position, c.Heads, c.KvHeads, c.HeadDim, c.AttentionScale, _step);
        for (int l = 0; l < c.Layers; l++)
        {
            var w = _model.Layers[l];
            _b.RmsNorm(x, w.InputNorm, c.HiddenSize, eps, h);
            _b.MatMul(h, [new(w.Q, w.QBias, q), new(w.K, w.KBias, k), new(w.V, w.VBias, v)]);
            if (w.QNorm is not null && w.KNorm is not null)
            {
                // Qwen3 normalises each head's q and k before the rotation.
                _b.RmsNorm(q, w.QNorm, c.HeadDim, eps, q);
                _b.RmsNorm(k, w.KNorm, c.HeadDim, eps, k);
            }
            var layer = attention with { Layer = l };
            _b.RopeAppendKv(layer, q, k, v, _cache);
            _attention.Attend(layer, q, _cache, attn);
            if (_observer is null)
            {
                _b.MatMul(attn, w.O, w.OBias, x, accumulate: true);
            }
            else
            {
                // An observer sees the residual before the attention output is added, and that output alone.
                _b.MatMul(attn, w.O, w.OBias, h);
                _observer.OnAttention(new LayerObservation(l, Position, n, _b, x, q, _cache, h));
                _b.Add(x, h);
            }
            _b.RmsNorm(x, w.PostAttentionNorm, c.HiddenSize, eps, h);
            _b.MatMulSwiGlu(h, w.Gate, w.Up, gate, up);
            _b.MatMul(gate, w.Down, null, x, accumulate: true);
        }
        return x;
    }

    public void Dispose()
    {
        foreach (var t in new[] { _x, _h, _q, _k, _v, _attn, _gate, _up, _lastHidden, _lastLogits, _allLogits })
        {
            t?.Dispose();
        }
        _cache.Dispose();
        _attention.Dispose();
        _recorded.Dispose();
        _step.Dispose();
    }
}
