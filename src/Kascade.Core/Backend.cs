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
public readonly record struct KvCacheShape(int Layers, int KvHeads, int HeadDim, int Capacity);

/// <summary>A backend's key/value cache for one sequence.</summary>
public abstract class KvCache : IDisposable
{
    protected KvCache(KvCacheShape shape) => Shape = shape;

    public KvCacheShape Shape { get; }

    public abstract void Dispose();
}

/// <summary>
/// Dense causal attention of a chunk of <paramref name="Tokens"/> queries at positions
/// <c>[StartPosition, StartPosition + Tokens)</c> over the cached keys <c>[0, StartPosition + Tokens)</c>.
/// Query head <c>h</c> reads KV head <c>h / (Heads / KvHeads)</c>.
/// </summary>
public readonly record struct AttentionArgs(int Layer, int Tokens, int StartPosition, int Heads, int KvHeads, int HeadDim, float Scale);

/// <summary>Rotary embedding of <paramref name="Heads"/> heads of <paramref name="HeadDim"/> per row, for rows at positions <c>StartPosition + row</c>.</summary>
public readonly record struct RopeArgs(int Heads, int HeadDim, int StartPosition);

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

    /// <summary>output[t] = table[ids[t]]; table <c>[vocab, hidden]</c>, output <c>[ids.Length, hidden]</c>.</summary>
    void Embed(ReadOnlySpan<int> ids, Weight table, DeviceTensor output);

    /// <summary>
    /// RMSNorm over groups of <paramref name="width"/> consecutive features (the whole row, or one head
    /// for Qwen3's q/k norms): <c>y = x / sqrt(mean(x²) + eps) · weight</c>; weight <c>[width]</c>.
    /// </summary>
    void RmsNorm(DeviceTensor x, Weight weight, int width, float eps, DeviceTensor output);

    /// <summary>output <c>[m, n]</c> = x <c>[m, k]</c> · weightᵀ (<c>[n, k]</c>) + bias (<c>[n]</c>, optional).</summary>
    void MatMul(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output);

    /// <summary>Rotates x <c>[tokens, Heads·HeadDim]</c> in place.</summary>
    void ApplyRope(DeviceTensor x, RopeArgs args);

    /// <summary>gate = silu(gate) · up, elementwise, in place; both <c>[tokens, intermediate]</c>.</summary>
    void SwiGlu(DeviceTensor gate, DeviceTensor up);

    /// <summary>x += y, elementwise.</summary>
    void Add(DeviceTensor x, DeviceTensor y);

    /// <summary>Stores k and v (<c>[tokens, KvHeads·HeadDim]</c>) of <paramref name="layer"/> at positions <c>[startPosition, startPosition + tokens)</c>.</summary>
    void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v);

    /// <summary>output <c>[Tokens, Heads·HeadDim]</c> = causal softmax(q·kᵀ·scale)·v; q <c>[Tokens, Heads·HeadDim]</c>.</summary>
    void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>
    /// Kascade anchor: ranks the keys before each query tile by pooled score (DESIGN §3), keeps the Top-k, and
    /// attends over them plus the diagonal tile (or densely when <see cref="SelectionArgs.DenseOutput"/>).
    /// </summary>
    AttentionPlan AnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>Kascade reuse: KV head g attends over row <c>headMap[g]</c> of <paramref name="plan"/> plus the diagonal tile.</summary>
    void ReuseAttention(AttentionArgs args, AttentionPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>Every query head of every query attends over its own exact post-softmax Top-k of the visible keys.</summary>
    void OracleTopKAttention(AttentionArgs args, double topKPercent, DeviceTensor q, KvCache cache, DeviceTensor output);

    /// <summary>
    /// Query head h of query token t attends over exactly the key positions <c>selection[t, h]</c> (all visible to
    /// it): softmax over those keys only. The gathered form every baseline policy runs on (DESIGN §4).
    /// </summary>
    void SelectedAttention(AttentionArgs args, KeySelection selection, DeviceTensor q, KvCache cache, DeviceTensor output);

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
