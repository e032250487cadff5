using Kascade.Core;

namespace Kascade.Runtime.Attention;

/// <summary>
/// The ops a policy's layers issue (dense, anchor, sparse over a plan, a baseline's selector): the backend's own over one sequence's
/// chunk, or <see cref="IBatchedDecode"/>'s over a batch of sequences' decode steps. Either takes a step's args as a
/// session issues them (Tokens: the step's tokens per sequence, Layer: the layer), so a policy is written once for both
/// (and a benchmark times either with the same calls). q and output fp32 <c>[Sequences · Tokens, Heads·HeadDim]</c>.
/// </summary>
public abstract class AttentionOps
{
    private protected AttentionOps()
    {
    }

    /// <summary>Sequences each op serves: 1, or the batch (decode steps only; plans hold a unit per sequence).</summary>
    public abstract int Sequences { get; }

    /// <summary>Plan units a policy allocates for chunks of up to <paramref name="maxChunk"/> tokens.</summary>
    public abstract int PlanUnits(int maxChunk);

    /// <summary><see cref="IBackend.Attention"/>.</summary>
    public abstract void Dense(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary><see cref="IBackend.AnchorAttention"/>.</summary>
    public abstract void Anchor(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output);

    /// <summary><see cref="IBackend.SparseAttention"/>.</summary>
    public abstract void Sparse(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary><see cref="IBackend.UpdateSelectorState"/> (a batch: sequence b's state is the state's layer b).</summary>
    public abstract void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state);

    /// <summary><see cref="IBackend.SelectKeys"/>.</summary>
    public abstract void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan);

    /// <summary>Layers of the selector state a policy allocates: the model's for one sequence, the batch's sequences for a batch (as its cache's).</summary>
    public abstract int StateLayers(ModelConfig config);

    /// <summary>
    /// Whether <paramref name="backend"/>'s batched ops run a batch of <paramref name="sequences"/> decode steps of
    /// <paramref name="config"/>'s shape under <paramref name="policy"/>: dense always, the Kascade methods where
    /// <see cref="IBatchedDecode.RunsBatchedKascade"/>, a baseline where <see cref="IBatchedDecode.RunsBatchedSelector"/>
    /// says so; oracle-topk has no batched form. False without batched ops.
    /// </summary>
    public static bool RunsBatched(IBackend backend, AttentionPolicy policy, ModelConfig config, int sequences)
    {
        var step = new AttentionArgs(0, sequences, 0, config.Heads, config.KvHeads, config.HeadDim, config.AttentionScale);
        return backend is IBatchedDecode batched && policy.Method switch
        {
            AttentionMethod.Dense => true,
            AttentionMethod.OracleTopK => false,
            _ when policy.NeedsSchedule => batched.RunsBatchedKascade(step),
            _ => batched.RunsBatchedSelector(step, BaselinePolicy.SelectorOf(policy)),
        };
    }

    /// <summary>
    /// Refuses, with one error saying why, a batch of <paramref name="sequences"/> (above 1) that <see cref="RunsBatched"/>
    /// says <paramref name="backend"/> does not run under <paramref name="policy"/>: oracle-topk, or a shape its batched
    /// kernels do not take (a backend without batched ops at all is refused by <see cref="For"/>).
    /// </summary>
    public static void CheckBatched(IBackend backend, AttentionPolicy policy, ModelConfig config, int sequences)
    {
        if (sequences == 1 || RunsBatched(backend, policy, config, sequences))
        {
            return;
        }
        throw new KascadeException(policy.Method == AttentionMethod.OracleTopK
            ? $"{policy.Info.Name} has no batched decode (a batch of {sequences} sequences runs every other method)"
            : $"{policy.Info.Name}'s batched decode on {backend.Name} does not run this shape ({config.Heads} heads, {config.KvHeads} KV heads, head dim {config.HeadDim}) at a batch of {sequences}");
    }

    /// <summary>The ops of <paramref name="backend"/> over <paramref name="sequences"/> sequences: its own for one, its <see cref="IBatchedDecode"/> for more.</summary>
    public static AttentionOps For(IBackend backend, int sequences)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        if (sequences == 1)
        {
            return new Single(backend);
        }
        return backend is IBatchedDecode batched
            ? new Batch(batched, sequences)
            : throw new KascadeException($"the {backend.Name} backend has no batched decode ops (a batch of {sequences} sequences)");
    }

    private sealed class Single(IBackend backend) : AttentionOps
    {
        public override int Sequences => 1;

        public override int PlanUnits(int maxChunk) => KeyPlan.UnitsFor(maxChunk);

        public override void Dense(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output) => backend.Attention(args, q, cache, output);

        public override void Anchor(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output) =>
            backend.AnchorAttention(args, selection, q, cache, plan, output);

        public override void Sparse(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output) =>
            backend.SparseAttention(args, plan, headMap, q, cache, output);

        public override void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state) => backend.UpdateSelectorState(args, cache, state);

        public override void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan) =>
            backend.SelectKeys(args, q, cache, state, plan);

        public override int StateLayers(ModelConfig config) => config.Layers;
    }

    /// <summary>
    /// A batch of decode steps: q and output fp32 <c>[sequences, Heads·HeadDim]</c>, sequence b's keys layer b of the
    /// cache and its selector state layer b of the state (every layer of the model reads the same sequences and state:
    /// <see cref="IBatchedDecode"/> takes no layer).
    /// </summary>
    private sealed class Batch(IBatchedDecode batched, int sequences) : AttentionOps
    {
        public override int Sequences => sequences;

        public override int PlanUnits(int maxChunk) => maxChunk == 1
            ? sequences
            : throw new ArgumentOutOfRangeException(nameof(maxChunk), maxChunk, "a batch runs decode steps only");

        public override void Dense(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output) => batched.BatchedDecodeAttention(Steps(args), q, cache, output);

        public override void Anchor(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output) =>
            batched.BatchedAnchorAttention(Steps(args), selection, q, cache, plan, output);

        public override void Sparse(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output) =>
            batched.BatchedSparseAttention(Steps(args), plan, headMap, q, cache, output);

        public override void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state) => batched.BatchedUpdateSelectorState(Steps(args), cache, state);

        public override void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan) =>
            batched.BatchedSelectKeys(Steps(args), q, cache, state, plan);

        public override int StateLayers(ModelConfig config) => sequences;

        /// <summary>The batch's args (Tokens = sequences) for one decode step of each sequence.</summary>
        private AttentionArgs Steps(AttentionArgs args) => args.Tokens == 1
            ? args with { Tokens = sequences }
            : throw new ArgumentException($"a batch runs one decode step per sequence, not chunks of {args.Tokens}", nameof(args));
    }
}
