namespace Kascade.Core;

/// <summary>
/// fp32 activations owned by a backend: a row-major matrix <c>[Rows, Cols]</c>.
/// <see cref="Rows"/> may be fewer than the allocation (a view for a shorter chunk).
/// </summary>
public abstract class DeviceTensor : IDisposable
{
    protected DeviceTensor(int rows, int cols)
    {
        Rows = rows;
        Cols = cols;
    }

    public int Rows { get; }

    public int Cols { get; }

    /// <summary>The first <paramref name="rows"/> rows, sharing storage.</summary>
    public abstract DeviceTensor Take(int rows);

    /// <summary>Rows <c>[start, start + count)</c>, sharing storage.</summary>
    public abstract DeviceTensor Slice(int start, int count);

    public abstract void Dispose();
}

/// <summary>A weight as a checkpoint stores it: <c>[Rows, Cols]</c> (a vector has Rows = 1) of <see cref="DType"/>.</summary>
public abstract class Weight : IDisposable
{
    protected Weight(string name, DType dtype, int rows, int cols)
    {
        Name = name;
        DType = dtype;
        Rows = rows;
        Cols = cols;
    }

    public string Name { get; }

    public DType DType { get; }

    public int Rows { get; }

    public int Cols { get; }

    public abstract void Dispose();
}

/// <summary>
/// Raw weight bytes handed to a backend: <paramref name="Pointer"/> points at <c>Rows * Cols</c>
/// elements of <paramref name="DType"/>, little-endian, row-major, valid while the model is open
/// (memory-mapped checkpoint files).
/// </summary>
public readonly record struct WeightSource(string Name, DType DType, int Rows, int Cols, nint Pointer);

/// <summary>Shape of a key/value cache: per layer, <c>[KvHeads, Capacity, HeadDim]</c> keys and values.</summary>
public readonly record struct KvCacheShape(int Layers, int KvHeads, int HeadDim, int Capacity)
{
    /// <summary>Refuses a write of <paramref name="tokens"/> positions from <paramref name="startPosition"/> past the capacity.</summary>
    public void CheckWrite(int startPosition, int tokens)
    {
        if (startPosition + tokens > Capacity)
        {
            throw new InvalidOperationException($"KV cache holds {Capacity} positions; asked to write up to {startPosition + tokens}");
        }
    }
}

/// <summary>A backend's key/value cache for one sequence.</summary>
public abstract class KvCache : IDisposable
{
    protected KvCache(KvCacheShape shape) => Shape = shape;

    public KvCacheShape Shape { get; }

    public abstract void Dispose();
}

/// <summary>
/// The inputs of one forward step, kept where the backend's kernels read them: token ids <c>[MaxTokens]</c> (int32),
/// the start position, and the number of sampling draws so far. Ops given a step read its start position there, so
/// a recorded decode step (<see cref="IBackend.Record"/>, a CUDA graph) replays with the token the previous step
/// sampled, at the next position, with a fresh draw, without being recorded again.
/// </summary>
public abstract class StepInputs : IDisposable
{
    protected StepInputs(int maxTokens) => MaxTokens = maxTokens;

    public int MaxTokens { get; }

    public abstract void Dispose();
}

/// <summary>
/// Ops recorded once and replayed as one unit (a CUDA graph): a decode step whose changing inputs are read from a
/// <see cref="StepInputs"/>.
/// </summary>
public interface IRecordedStep : IDisposable
{
    /// <summary>
    /// Replays the ops for a step starting at <paramref name="startPosition"/>; false, with nothing run, when the
    /// recording does not fit that step (a launch plan it fixed is not the one the backend would choose there, or a
    /// buffer it uses has been replaced): record it again.
    /// </summary>
    bool TryReplay(int startPosition);
}

/// <summary>
/// Dense causal attention of a chunk of <paramref name="Tokens"/> queries at positions
/// <c>[StartPosition, StartPosition + Tokens)</c> over the cached keys <c>[0, StartPosition + Tokens)</c>.
/// Query head <c>h</c> reads KV head <c>h / (Heads / KvHeads)</c>. With a <paramref name="Step"/>, kernels read the
/// start position from it (StartPosition is its value when the op is issued: shapes, plans and checks use that).
/// </summary>
public readonly record struct AttentionArgs(int Layer, int Tokens, int StartPosition, int Heads, int KvHeads, int HeadDim, float Scale, StepInputs? Step = null)
{
    /// <summary>Refuses a count of score pools (<see cref="IBackend.PooledTileScores"/>) that does not split the query heads evenly.</summary>
    public void CheckPools(int pools)
    {
        if (pools < 1 || Heads % pools != 0)
        {
            throw new ArgumentException($"scores pool over equal runs of the {Heads} query heads (1, {KvHeads} GQA groups, or {Heads} single heads), not {pools} pools");
        }
    }
}

/// <summary>One weight applied to an input shared with others (<see cref="IBackend.MatMul(DeviceTensor, ReadOnlySpan{Projection})"/>).</summary>
/// <param name="Weight"><c>[n, k]</c>.</param>
/// <param name="Bias"><c>[n]</c>, or null.</param>
/// <param name="Output"><c>[m, n]</c> fp32, written.</param>
public readonly record struct Projection(Weight Weight, Weight? Bias, DeviceTensor Output);

/// <summary>
/// The op-level interface a model forward is written against. Every tensor argument is fp32
/// <c>[tokens, features]</c> unless its doc says otherwise. Backends may run asynchronously;
/// <see cref="Read"/> is the only synchronising call.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>Empty when the backend can run a model of this config; otherwise each reason it cannot.</summary>
    IReadOnlyList<string> Supports(ModelConfig config);

    /// <summary>Whether this backend has the ops <paramref name="method"/> runs on (sessions refuse the others up front).</summary>
    bool Runs(AttentionMethod method);

    Weight LoadWeight(WeightSource source);

    /// <summary>
    /// A weight <c>[rows, cols]</c> of <c>center + scale · u</c>, u uniform in [−1, 1), made on the device from
    /// <paramref name="seed"/> and the name (random-weight models for full-scale benchmarks).
    /// </summary>
    Weight RandomWeight(string name, int rows, int cols, float center, float scale, ulong seed);

    /// <summary>Uninitialised fp32 activations <c>[rows, cols]</c>.</summary>
    DeviceTensor Allocate(int rows, int cols);

    KvCache AllocateKvCache(KvCacheShape shape);

    /// <summary>Rotary tables for <paramref name="positions"/> positions (see <see cref="Rope.Tables"/>).</summary>
    void SetRope(RopeConfig rope, int headDim, int positions);

    StepInputs AllocateStepInputs(int maxTokens);

    /// <summary>
    /// Sets the token ids and start position of <paramref name="step"/>, in order with the work already issued (the
    /// ids are copied before the call returns). The draw count is kept.
    /// </summary>
    void WriteStep(StepInputs step, ReadOnlySpan<int> ids, int startPosition);

    /// <summary>
    /// output[t] = table[ids[t]] for the step's first <c>output.Rows</c> ids; table <c>[vocab, hidden]</c>, output
    /// <c>[tokens, hidden]</c>. The ids must be in the vocabulary (the session checks the ids it is given).
    /// </summary>
    void Embed(StepInputs step, Weight table, DeviceTensor output);

    /// <summary>
    /// RMSNorm over groups of <paramref name="width"/> consecutive features (the whole row, or one head
    /// for Qwen3's q/k norms): <c>y = x / sqrt(mean(x²) + eps) · weight</c>; weight <c>[width]</c>.
    /// </summary>
    void RmsNorm(DeviceTensor x, Weight weight, int width, float eps, DeviceTensor output);

    /// <summary>
    /// output <c>[m, n]</c> = x <c>[m, k]</c> · weightᵀ (<c>[n, k]</c>) + bias (<c>[n]</c>, optional); with
    /// <paramref name="accumulate"/>, output += x · weightᵀ + bias instead (a residual connection).
    /// </summary>
    void MatMul(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output, bool accumulate = false);

    /// <summary>
    /// Each projection's <c>Output = x · Weightᵀ + Bias</c> over the same x <c>[m, k]</c> (a layer's q, k and v): one
    /// pass where the backend can (CUDA decode: one launch).
    /// </summary>
    void MatMul(DeviceTensor x, ReadOnlySpan<Projection> projections);

    /// <summary>
    /// The Llama MLP's gated activation: output <c>[m, n]</c> = silu(x · gateᵀ) ⊙ (x · upᵀ), x <c>[m, k]</c>, gate and up
    /// <c>[n, k]</c>. <paramref name="workspace"/> (<c>[m, n]</c> fp32) holds x · upᵀ where the backend needs it.
    /// </summary>
    void MatMulSwiGlu(DeviceTensor x, Weight gate, Weight up, DeviceTensor output, DeviceTensor workspace);

    /// <summary>
    /// The step's attention inputs for layer <c>args.Layer</c>: rotates q <c>[Tokens, Heads·HeadDim]</c> and k
    /// <c>[Tokens, KvHeads·HeadDim]</c> in place (rotary embedding at positions <c>StartPosition + row</c>, read from
    /// <c>args.Step</c> when given) and stores k and v (<c>[Tokens, KvHeads·HeadDim]</c>) in the cache at those positions.
    /// </summary>
    void RopeAppendKv(AttentionArgs args, DeviceTensor q, DeviceTensor k, DeviceTensor v, KvCache cache);

    /// <summary>x += y, elementwise.</summary>
    void Add(DeviceTensor x, DeviceTensor y);

    /// <summary>
    /// Stores k and v (<c>[tokens, KvHeads·HeadDim]</c>) of <paramref name="layer"/> at positions
    /// <c>[startPosition, startPosition + tokens)</c>, the start read from <paramref name="step"/> when given.
    /// </summary>
    void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v, StepInputs? step = null);

    /// <summary>output <c>[Tokens, Heads·HeadDim]</c> = causal softmax(q·kᵀ·scale)·v; q <c>[Tokens, Heads·HeadDim]</c>.</summary>
    void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>
    /// The anchors' ranking (DESIGN §3), written once for every user (anchors, calibration, analysis): for each 32-query
    /// tile of the call (<see cref="QueryTile.Of"/>) and each pool g of query heads — <c>Heads / pools</c> consecutive heads:
    /// the GQA group of KV head g when <paramref name="pools"/> is KvHeads, one head when it is Heads, every head when
    /// it is 1 — <c>scores[tile · pools + g, j]</c> sums, over the tile's queries i
    /// and the pool's heads, the exact post-softmax probability of key j (full-row softmax over the keys i sees) or
    /// the raw scaled score q·k (<see cref="ScorePooling.PreSoftmax"/>), with 0 where j lies after i. scores: fp32
    /// <c>[tiles · pools, StartPosition + Tokens]</c>; keys before a tile's <c>CandidateEnd</c> are its candidates, the
    /// rest of its row is its diagonal block.
    /// </summary>
    void PooledTileScores(AttentionArgs args, ScorePooling pooling, int pools, DeviceTensor q, KvCache cache, DeviceTensor scores);

    /// <summary>
    /// Every query head's exact attention probabilities (analysis): <c>probabilities[t · Heads + h, j]</c> = softmax
    /// over the keys j ≤ StartPosition + t of scale · q[t, h] · K[j], 0 beyond. fp32 <c>[Tokens · Heads, StartPosition + Tokens]</c>.
    /// </summary>
    void AttentionProbabilities(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor probabilities);

    /// <summary>A plan of <paramref name="units"/> × <paramref name="selectors"/> rows of up to <paramref name="capacity"/> positions.</summary>
    KeyPlan AllocatePlan(int units, int selectors, int capacity, PlanUnit unit = PlanUnit.Tile);

    /// <summary>
    /// Kascade anchor: ranks the keys before each query tile by pooled score (DESIGN §3), writes each tile's Top-k
    /// into <paramref name="plan"/> (selectors: 1 when <see cref="SelectionArgs.PoolAllHeads"/>, else KvHeads), and
    /// attends over them plus the diagonal tile (or densely when <see cref="SelectionArgs.DenseOutput"/>).
    /// </summary>
    void AnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output);

    /// <summary>
    /// Sparse attention over a plan (Kascade's reuse layers and anchors, the baselines): each query attends over the
    /// positions of its unit's row <c>headMap[…]</c> — plus, in a <see cref="PlanUnit.Tile"/> plan, its tile's diagonal keys
    /// up to itself — with a softmax over exactly those keys. <paramref name="headMap"/> gives each KV head's query heads
    /// one selector (<c>KvHeads</c> entries, Kascade's head maps) or each query head its own (<c>Heads</c> entries). q and
    /// output fp32 <c>[Tokens, Heads·HeadDim]</c>. The plan must have been written for this chunk; an empty row gives zeros.
    /// </summary>
    void SparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>
    /// Adds the step's own position to every row of a decode plan (<paramref name="args"/> one token; every unit's rows:
    /// a batch's sequences share the step's position, <see cref="IBatchedDecode"/>), which then serves
    /// this step: an anchor that keeps its selection between refreshes (<see cref="AttentionPolicy.AnchorRefresh"/>) still
    /// attends every key appended since it selected. The plan's capacity must hold the additions.
    /// </summary>
    void ExtendPlan(AttentionArgs args, KeyPlan plan);

    /// <summary>
    /// Copies a plan to host memory (waits for queued work): <c>counts[row]</c> positions in
    /// <c>indices[row · Capacity …]</c>, rows <c>[0, counts.Length)</c>; int32 <c>counts [rows]</c>, <c>indices [rows, Capacity]</c>
    /// (entries past a row's count are unspecified). For parity checks and analysis.
    /// </summary>
    void ReadPlan(KeyPlan plan, Span<int> counts, Span<int> indices);

    /// <summary>
    /// The inverse of <see cref="ReadPlan"/>: writes rows <c>[0, counts.Length)</c> of <paramref name="plan"/> from host
    /// memory (int32 <c>counts [rows]</c>, <c>indices [rows, Capacity]</c>) and notes that it serves
    /// <paramref name="args"/>' chunk (<see cref="KeyPlan.CheckWrite"/> refuses a count past the capacity or a position
    /// outside the chunk's keys; duplicates and the diagonal tile's keys are the caller's to avoid). A batch's plan
    /// (<see cref="IBatchedDecode"/>) is written with the step's arguments: one query per sequence, <c>Tokens = 1</c>. For
    /// parity checks: the reference attends over a plan another backend made.
    /// </summary>
    void WritePlan(AttentionArgs args, KeyPlan plan, ReadOnlySpan<int> counts, ReadOnlySpan<int> indices);

    /// <summary>Every query head of every query attends over its own exact post-softmax Top-k of the visible keys.</summary>
    void OracleTopKAttention(AttentionArgs args, double topKPercent, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>The state <paramref name="selector"/> keeps per layer for a session of this cache shape and head count.</summary>
    SelectorState AllocateSelectorState(KeySelector selector, KvCacheShape shape, int heads);

    /// <summary>
    /// Brings <paramref name="state"/>'s summary of <paramref name="args"/>' layer up to date with the keys the chunk
    /// appended (quest's page bounds, over the pages the chunk touches); a no-op for selectors that keep none. Call it
    /// after <see cref="AppendKv"/> in every call of every layer that will select, prefill included.
    /// </summary>
    void UpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state);

    /// <summary>
    /// Writes the keys <paramref name="state"/>'s selector picks for the chunk into <paramref name="plan"/>: one row per
    /// selector (<see cref="KeySelector.Selectors"/>) for a decode step, or per query token and selector for a
    /// selector that <see cref="KeySelector.Prefills"/> (a <see cref="PlanUnit.Token"/> plan); <see cref="SparseAttention"/>
    /// attends over it. q fp32 <c>[Tokens, Heads·HeadDim]</c>. Sparcas's dimension sets age by one step per call.
    /// </summary>
    void SelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan);

    /// <summary>
    /// Chooses a token from each row r of <paramref name="logits"/> (<c>[rows, vocab]</c>) by the <see cref="Sampling"/>
    /// rule, with draw number (the step's draw count + r), and makes it the step's token r; the draw count grows by
    /// the rows. <see cref="ReadTokens"/> reads the tokens.
    /// </summary>
    void Sample(DeviceTensor logits, SamplingOptions options, StepInputs step);

    /// <summary>Moves the step's start position on by <paramref name="tokens"/> (back, when negative), in order with the work issued.</summary>
    void Advance(StepInputs step, int tokens);

    /// <summary>The step's first <c>ids.Length</c> token ids (waits for queued work).</summary>
    void ReadTokens(StepInputs step, Span<int> ids);

    /// <summary>
    /// Records the ops <paramref name="issue"/> issues, without running them, as one replayable unit; null when the
    /// backend runs ops as they are issued (then <paramref name="issue"/> is not called). Ops in a recording read
    /// their start position from a <see cref="StepInputs"/>.
    /// </summary>
    IRecordedStep? Record(Action issue);

    /// <summary>Keys of <paramref name="layer"/> at positions <c>[0, count)</c> to host memory, <c>[KvHeads, count, HeadDim]</c>.</summary>
    void ReadKeys(KvCache cache, int layer, int count, Span<float> destination);

    /// <summary>Copies host values into x (<c>values.Length = Rows · Cols</c>).</summary>
    void Write(DeviceTensor x, ReadOnlySpan<float> values);

    /// <summary>Copies x to host memory (waits for queued work).</summary>
    void Read(DeviceTensor x, Span<float> destination);
}

public static class BackendExtensions
{
    /// <summary>A new fp32 tensor <c>[rows, cols]</c> on <paramref name="backend"/> holding <paramref name="values"/>.</summary>
    public static DeviceTensor Upload(this IBackend backend, ReadOnlySpan<float> values, int rows, int cols)
    {
        var tensor = backend.Allocate(rows, cols);
        backend.Write(tensor, values);
        return tensor;
    }
}
