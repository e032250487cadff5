using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>The arguments of <c>sparse_attention</c> (its <c>SparseParams</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SparseParams
{
    public const int MaxHeads = 64;

    public nint Q;          // fp32 [tokens, heads, head dim]
    public nint KCache;     // bf16 [kv heads, capacity, head dim], one layer
    public nint VCache;
    public nint Out;        // fp32 [tokens, heads, head dim]
    public nint Indices;    // int32 [plan rows, plan capacity]
    public nint Counts;     // int32 [plan rows]
    public nint StartAt;
    public long SequenceStride; // sparse_decode_mma and sparse_decode over a batch: elements from one sequence's K/V to the next's
    public int Tokens, Heads, KvHeads, Capacity, Start, PlanCapacity, RowsPerUnit, TileUnits, GroupRows, PlanSettled;
    public float Scale;
    public fixed int HeadMap[MaxHeads];
}

/// <summary>
/// Sparse attention over a key plan (<see cref="IBackend.SparseAttention"/>, and an anchor's own output): which kernel
/// runs a chunk — a decode step on tensor cores (<c>sparse_decode_mma</c>, or <c>sparse_decode_scored</c> with the
/// anchor's own scores), on CUDA cores (<c>sparse_decode</c>), a prefill chunk's tiles (<c>CudaBackend.SparsePrefill.cs</c>)
/// or the reference's warp per query row (<c>sparse_attention</c>) — and their split-KV partials.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private DeviceMemory? _sparsePartialOut, _sparsePartialMl;

    public void SparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output) =>
        Sparse(args, (CudaKeyPlan)plan, headMap, q, CacheSequences.Of((CudaKvCache)cache, args.Layer), output);

    /// <summary>
    /// <see cref="SparseAttention"/> for <c>s.Count</c> sequences (a batch of decode steps: <see cref="BatchedSparseAttention"/>),
    /// scored by <paramref name="scored"/> (the raw decode scores the plan was ranked from, exact) where given and the
    /// tensor-core decode kernel runs with a per-KV-head map.
    /// </summary>
    private void Sparse(AttentionArgs args, CudaKeyPlan p, IReadOnlyList<int> headMap, DeviceTensor q, CacheSequences s, DeviceTensor output, RawDecodeScores? scored = null)
    {
        p.CheckServes(args);
        var rowOf = p.SelectorOfHead(args.Heads, args.KvHeads, headMap);
        var parameters = SparseArgs(args, s, In(q), Out(output), p.Indices.Pointer, p.Counts.Pointer, p.Capacity, p.Selectors,
            tileUnits: p.Unit == PlanUnit.Tile, groupRows: headMap.Count == args.KvHeads);
        for (int h = 0; h < args.Heads; h++)
        {
            parameters.HeadMap[h] = rowOf[h];
        }
        parameters.PlanSettled = p.Reading() ? 1 : 0;
        LaunchSparse(args, parameters, s.Count, scored);
    }

    private SparseParams SparseArgs(AttentionArgs args, CacheSequences s, nint q, nint output, nint indices, nint counts, int planCapacity, int rowsPerUnit, bool tileUnits, bool groupRows)
    {
        CheckHeads(args);
        return new SparseParams
        {
            Q = q, KCache = s.Keys, VCache = s.Values, Out = output, Indices = indices, Counts = counts, SequenceStride = s.Stride,
            StartAt = StartOnDevice(args.Step), Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads, Capacity = s.Capacity,
            Start = args.StartPosition, PlanCapacity = planCapacity, RowsPerUnit = rowsPerUnit, TileUnits = tileUnits ? 1 : 0, GroupRows = groupRows ? 1 : 0, Scale = args.Scale,
        };
    }

    /// <summary>
    /// Sparse attention over a plan: a decode step's rows through <c>sparse_decode_mma</c> (tensor cores, attention_decode's
    /// loop over gathered K/V tiles) where the fast kernels are on, else
    /// <c>sparse_decode</c> (CUDA cores) where its head dim and head sets fit it, both split over the row's keys and merged
    /// by <c>attention_combine</c>; a prefill chunk of a tile plan through <see cref="TrySparsePrefill"/> (tensor cores, a
    /// block per tile and KV head: <c>sparse_prefill_wgmma</c> on Hopper, else <c>sparse_prefill_mma</c>) where it fits; every other chunk through <c>sparse_attention</c> (a warp per query row). A
    /// batch of <paramref name="sequences"/> decode steps runs on the two decode kernels, the sequence in grid z.
    /// </summary>
    private void LaunchSparse(AttentionArgs args, SparseParams parameters, int sequences, RawDecodeScores? scored = null)
    {
        int group = args.Heads / args.KvHeads, setHeads = parameters.GroupRows == 1 ? group : 1;
        if (TrySparseDecodeMma(args, parameters, sequences, scored))
        {
            return;
        }
        if (SparseDecodeRuns(args, setHeads))
        {
            int sets = args.Heads / setHeads, rows = sequences * args.Heads;
            // Enough splits for two blocks per multiprocessor, each at least DecodeKeysPerSplit of the row's capacity.
            int splits = Math.Clamp(Math.Min((parameters.PlanCapacity + DecodeKeysPerSplit - 1) / DecodeKeysPerSplit, 2 * _device.Multiprocessors / (sets * sequences)), 1, MaxCombineSplits);
            var (po, pm) = SparsePartials(rows, splits, args.HeadDim);
            var slots = stackalloc void*[3];
            slots[0] = &parameters;
            slots[1] = &po;
            slots[2] = &pm;
            Launch(SelectionModule(args.HeadDim).Function("sparse_decode"), "sparse_decode", new Dim3((uint)splits, (uint)sets, (uint)sequences), DecodeThreads, 0, slots, dependent: false);
            Launch(CombineModule(args.HeadDim), "attention_combine", new Dim3((uint)rows, 1, 1), (uint)args.HeadDim * CombineLanes, dependent: false, po, pm, parameters.Out, splits);
            return;
        }
        if (sequences > 1)
        {
            throw new KascadeException($"batched sparse decode needs the tensor-core kernel (a per-KV-head map, the fast kernels on) or a head dim of at most {DecodeThreads} (head dim {args.HeadDim})");
        }
        if (TrySparsePrefill(args, parameters))
        {
            return;
        }
        LaunchWith(SelectionModule(args.HeadDim).Function("sparse_attention"), "sparse_attention", new Dim3((uint)((args.Tokens * args.Heads + 3) / 4), 1, 1), 128, 0, parameters);
    }

    /// <summary>
    /// A decode step's sparse attention on tensor cores (<c>sparse_decode_mma</c>): attention_decode's specialisation for
    /// the group, split over the plan row's capacity as attention_decode splits a context (the capacity is fixed, so a
    /// recorded step replays), the splits merged by <c>attention_combine</c>; a per-query-head map (the baselines' plans)
    /// runs each query head as a group of one. False where it does not apply (fast kernels off, a prefill chunk, a group
    /// past <see cref="AttentionKernel.DecodeRows"/> or a head dim off the tensor cores). With <paramref name="scored"/> and a
    /// per-KV-head map, <c>sparse_decode_scored</c> takes each key's scores from those raw rows and gathers V alone.
    /// </summary>
    private bool TrySparseDecodeMma(AttentionArgs args, SparseParams parameters, int sequences, RawDecodeScores? scored)
    {
        if (!FastDecode(args))
        {
            return false;
        }
        bool perQueryHead = parameters.GroupRows == 0, fromScores = scored is not null && !perQueryHead;
        string name = fromScores ? "sparse_decode_scored" : "sparse_decode_mma";
        var (kernel, function, plan, units) = DecodeLaunch(args, ("attention_decode.cu", name), parameters.PlanCapacity, sequences, perQueryHead);
        int rows = sequences * args.Heads;
        var (po, pm) = SparsePartials(rows, plan.Splits, args.HeadDim);
        var slots = stackalloc void*[5];
        slots[0] = &parameters;
        slots[1] = &po;
        slots[2] = &pm;
        nint raw = scored?.Raw ?? 0;
        long rawStride = scored?.Stride ?? 0;
        if (fromScores)
        {
            slots[3] = &raw;
            slots[4] = &rawStride;
        }
        Launch(function.Function, name, new Dim3((uint)plan.Splits, 1, (uint)(sequences * units)), (uint)kernel.Threads, (uint)function.SharedBytes, slots, dependent: true);
        if (plan.Splits > 1)
        {
            Launch(CombineModule(args.HeadDim), "attention_combine", new Dim3((uint)rows, 1, 1), (uint)args.HeadDim * CombineLanes, dependent: true, po, pm, parameters.Out, plan.Splits);
        }
        return true;
    }

    /// <summary>Whether <c>sparse_decode</c> (CUDA cores) runs a decode step whose plan rows each serve <paramref name="setHeads"/> query heads.</summary>
    private static bool SparseDecodeRuns(AttentionArgs args, int setHeads) => args.Tokens == 1 && args.HeadDim <= DecodeThreads && setHeads <= MaxDecodeSet;

    /// <summary>The split partials of a decode step's sparse attention: fp32 (output <c>[rows, splits, headDim]</c>, (max, sum) <c>[rows, splits, 2]</c>) for its query rows (sequences × heads).</summary>
    private (nint Out, nint Ml) SparsePartials(int rows, int splits, int headDim) =>
        (Scratch(ref _sparsePartialOut, (long)rows * splits * headDim * sizeof(float)).Pointer, Scratch(ref _sparsePartialMl, (long)rows * splits * 2 * sizeof(float)).Pointer);

    /// <summary><c>sparse_decode</c>'s block (DECODE_THREADS) and the most query heads it handles as one set (MAX_SET).</summary>
    private const int DecodeThreads = 128, MaxDecodeSet = 8;

    /// <summary>The fewest plan positions a <c>sparse_decode</c> split covers.</summary>
    private const int DecodeKeysPerSplit = 256;

    /// <summary><c>attention_combine</c>'s MAX_SPLITS.</summary>
    private const int MaxCombineSplits = 1024;

    private void DisposeSparseBuffers()
    {
        _sparsePartialOut?.Dispose();
        _sparsePartialMl?.Dispose();
    }
}
