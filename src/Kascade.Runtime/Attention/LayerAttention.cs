using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// What each layer of one session runs under its <see cref="AttentionPolicy"/>: a policy over the backend's
/// select/attend ops (DESIGN §2) that keeps its plans and selector state in the backend's memory between layers and
/// steps. No policy reads the device, so every method's decode step records as a CUDA graph.
/// </summary>
internal abstract class LayerAttention : IDisposable
{
    protected LayerAttention(IBackend backend) => Backend = backend;

    protected IBackend Backend { get; }

    /// <summary>
    /// The layers of a session of <paramref name="capacity"/> positions and chunks of up to <paramref name="maxChunk"/>
    /// tokens under <paramref name="policy"/>; with <paramref name="sequences"/> above 1, the decode steps of a batch of
    /// that many sequences (<see cref="AttentionOps"/>; every method but oracle-topk, whose ops have batched forms).
    /// </summary>
    public static LayerAttention Open(AttentionPolicy policy, IBackend backend, ModelConfig config, int capacity, int maxChunk, int sequences = 1)
    {
        var ops = AttentionOps.For(backend, sequences);
        AttentionOps.CheckBatched(backend, policy, config, sequences);
        return policy.Method switch
        {
            AttentionMethod.Dense => new DenseLayers(backend, ops),
            AttentionMethod.OracleTopK => new OracleLayers(backend, policy.TopKPercent),
            _ when policy.NeedsSchedule => new KascadeLayers(backend, ops, policy, config, capacity, maxChunk),
            _ when policy.IsBaseline => new BaselineLayers(backend, ops, policy, config, capacity, maxChunk),
            _ => throw new ArgumentOutOfRangeException(nameof(policy), policy.Method, "no layer attention for this method"),
        };
    }

    /// <summary>
    /// Called before each step's layers, recorded or not, with the step's tokens (1: a decode step, or a prefill chunk
    /// of one token) and its start position. Returns which of the policy's decode-step variants the step runs (their
    /// ops differ, so each is recorded once): 0 unless the policy's decode steps alternate.
    /// </summary>
    public virtual int BeginStep(int tokens, int startPosition) => 0;

    /// <summary>
    /// Brings the layers' state up to date with keys that reached the cache outside this object's steps (positions
    /// <c>[0, args.Tokens)</c> of every layer; <paramref name="args"/>' layer is ignored), as a prefill of them would
    /// have left it: selectors that summarise the cache summarise them, and the next decode step selects.
    /// </summary>
    public virtual void Resume(AttentionArgs args, KvCache cache) => BeginStep(args.Tokens, 0);

    /// <summary>
    /// One layer's attention over the chunk <paramref name="args"/> describes, after its keys and values are in
    /// <paramref name="cache"/>; q and output fp32 <c>[Tokens, Heads·HeadDim]</c>. Layers run in order, from 0, for every chunk.
    /// </summary>
    public abstract void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output);

    public virtual void Dispose()
    {
    }

    private sealed class DenseLayers(IBackend backend, AttentionOps ops) : LayerAttention(backend)
    {
        public override void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output) => ops.Dense(args, q, cache, output);
    }

    private sealed class OracleLayers(IBackend backend, double topKPercent) : LayerAttention(backend)
    {
        public override void Attend(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output) =>
            Backend.OracleTopKAttention(args, topKPercent, q, cache, output);
    }
}
