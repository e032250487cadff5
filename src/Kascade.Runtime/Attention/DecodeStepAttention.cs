using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// The attention half of decode under one <see cref="AttentionPolicy"/>: every layer's attention of a decode step over a
/// cache filled outside a session, without the rest of the model — what a method's per-layer cost is measured on
/// (<c>kascade bench methods</c>, the speed side of issue 16's frontier). The policy's layers run as a session runs
/// them (<see cref="LayerAttention"/>), each step recorded once and replayed where the backend records (CUDA graphs),
/// so a step costs what it costs inside <c>generate</c>.
/// </summary>
/// <remarks>
/// One <see cref="RunCycle"/> is the policy's repeating unit of decode steps: <see cref="AttentionPolicy.AnchorRefresh"/>
/// steps for the Kascade methods (one that selects, the rest that keep their selection), one step otherwise. Its
/// steps run at positions <c>[Length − StepsPerCycle, Length)</c>, so every step attends over keys the cache holds,
/// and the last one over all <see cref="Length"/>.
/// </remarks>
public sealed class DecodeStepAttention : IDisposable
{
    private readonly IBackend _backend;
    private readonly LayerAttention _layers;
    private readonly KvCache _cache;
    private readonly ModelConfig _config;
    private readonly DeviceTensor _q;
    private readonly DeviceTensor _output;
    private readonly StepInputs _step;

    /// <summary>Recorded steps by (step variant, start position): a cycle's positions may need different launch plans.</summary>
    private readonly RecordedSteps<(int Variant, int Position)> _recorded;

    /// <param name="cache">
    /// bf16 keys and values filled at positions <c>[0, length)</c>: of every layer of <paramref name="config"/>, or, for a
    /// batch, of each of the <paramref name="sequences"/> sequences (layer b is sequence b, and every layer of the model
    /// attends over the same batch: a batch of long contexts of every layer would not fit, and at the paper's shapes each
    /// layer's read is far larger than the L2, so the per-layer cost is the same; a batch small enough to stay in the L2
    /// between layers would be timed too fast).
    /// </param>
    /// <param name="q">fp32 <c>[sequences, Heads·HeadDim]</c>: the queries every layer attends with.</param>
    /// <param name="output">fp32 <c>[sequences, Heads·HeadDim]</c>: written by every layer.</param>
    /// <param name="sequences">The batch: 1, or more for the batched decode ops (<see cref="IBatchedDecode"/>; every method but oracle-topk).</param>
    public DecodeStepAttention(IBackend backend, AttentionPolicy policy, ModelConfig config, KvCache cache, int length, DeviceTensor q, DeviceTensor output, int sequences = 1)
    {
        int layers = sequences == 1 ? config.Layers : sequences;
        if (cache.Shape.Layers != layers || cache.Shape.KvHeads != config.KvHeads || cache.Shape.HeadDim != config.HeadDim)
        {
            throw new ArgumentException($"the cache ({cache.Shape}) does not hold {layers} {(sequences == 1 ? "layers" : "sequences")} of {config.KvHeads} KV heads × {config.HeadDim}", nameof(cache));
        }
        int width = config.Heads * config.HeadDim;
        if (q.Rows != sequences || output.Rows != sequences || q.Cols != width || output.Cols != width)
        {
            throw new ArgumentException($"queries and output are [{sequences}, {width}], a row per sequence, not [{q.Rows}, {q.Cols}] and [{output.Rows}, {output.Cols}]");
        }
        StepsPerCycle = policy.NeedsSchedule ? policy.AnchorRefresh : 1;
        if (length < StepsPerCycle || length > cache.Shape.Capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"a cycle of {StepsPerCycle} steps needs at least that many cached positions, and at most the cache's {cache.Shape.Capacity}");
        }
        _backend = backend;
        _config = config;
        _cache = cache;
        _q = q;
        _output = output;
        Length = length;
        _recorded = new RecordedSteps<(int Variant, int Position)>(backend.Record);
        _layers = LayerAttention.Open(policy, backend, config, cache.Shape.Capacity, maxChunk: 1, sequences);
        try
        {
            _step = backend.AllocateStepInputs(1);
            // As after a prefill of the cached keys: selectors summarise them, and the first decode step selects.
            _layers.Resume(Args(0, length), cache);
            // The cycle's first position, on the device; each cycle's last step moves it back there (no host write is timed).
            backend.WriteStep(_step, [0], length - StepsPerCycle);
        }
        catch
        {
            _step?.Dispose();
            _layers.Dispose();
            throw;
        }
    }

    /// <summary>Cached positions: the last step of a cycle attends over all of them.</summary>
    public int Length { get; }

    /// <summary>Decode steps in one <see cref="RunCycle"/>.</summary>
    public int StepsPerCycle { get; }

    /// <summary>
    /// Issues <see cref="StepsPerCycle"/> decode steps of every layer's attention (recorded on their first run where the
    /// backend records, replayed after), in order on the backend's queue; does not wait for them.
    /// </summary>
    public void RunCycle()
    {
        int first = Length - StepsPerCycle;
        for (int i = 0; i < StepsPerCycle; i++)
        {
            int position = first + i, variant = _layers.BeginStep(1, position);
            _recorded.Run((variant, position), position, () => Issue(position));
        }
    }

    /// <summary>
    /// One step: every layer's attention at <paramref name="position"/>, then the step's position moved on (as sampling
    /// does in a session), or, after the cycle's last step, back to its first.
    /// </summary>
    private void Issue(int position)
    {
        var args = Args(position, 1) with { Step = _step };
        for (int layer = 0; layer < _config.Layers; layer++)
        {
            _layers.Attend(args with { Layer = layer }, _q, _cache, _output);
        }
        _backend.Advance(_step, position == Length - 1 ? 1 - StepsPerCycle : 1);
    }

    private AttentionArgs Args(int start, int tokens) =>
        new(0, tokens, start, _config.Heads, _config.KvHeads, _config.HeadDim, _config.AttentionScale);

    public void Dispose()
    {
        _recorded.Dispose();
        _step.Dispose();
        _layers.Dispose();
    }
}
