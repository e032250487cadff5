using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>The arguments of <c>attention_mma</c>, <c>attention_wgmma</c> and <c>attention_decode</c> (their <c>AttentionParams</c>, field for field).</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal struct AttentionParams
{
    public nint Q;            // fp32 [sequences × tokens, heads, head dim]
    public nint KCache;       // bf16 [sequences][kv heads, capacity, head dim]
    public nint VCache;
    public nint Out;          // fp32 [sequences × tokens, heads, head dim]
    public nint PartialOut;   // fp32 [rows, splits, head dim] (splits > 1)
    public nint PartialMl;    // fp32 [rows, splits, 2]
    public nint StartAt;      // int32 start position on the device (a step's), or 0: Start
    public long SequenceStride;
    public int Tokens, Heads, KvHeads, Capacity, Start;
    public float Scale;
    public nint Lse;          // fp32 [sequences × tokens, heads]: the rows' natural-log log-sum-exp (attention_wgmma_lse*, one split), else 0
}

/// <summary>What an attention call's plan depends on besides the position: rows per sequence, group, KV heads, head dim, sequences.</summary>
internal readonly record struct AttentionShape(int Tokens, int Group, int KvHeads, int HeadDim, int Sequences);

/// <summary>A compiled tensor-core attention specialisation and what its launch needs to know.</summary>
internal sealed record TensorCoreFunction(nint Function, int SharedBytes, int ResidentBlocks);

/// <summary>
/// Attention: dense attention on the tensor-core kernels (or <c>attention_dense</c> for other head dims) and the
/// baselines' gathered attention; the tensor-core launch plans, and the attention modules (a module per
/// source and define set: attention_simple.cu, attention_combine.cu, and each tensor-core kernel's own source).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<(int HeadDim, int Group), CudaModule> _simpleModules = [];
    private readonly Dictionary<int, CudaModule> _combineModules = [];
    private readonly Dictionary<(int HeadDim, int Group, AttentionKernel Kernel, string Entry), TensorCoreFunction> _tensorCoreFunctions = [];
    private DeviceMemory? _partialOut, _partialMl;

    public void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        nint keys = c.LayerKeys(args.Layer), values = c.LayerValues(args.Layer);
        if (AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            int warps = args.Tokens * args.Heads;
            Launch(SimpleModule(args.HeadDim, args.Heads / args.KvHeads), "attention_dense", (uint)((warps + 3) / 4), 128, In(q), keys, values, Out(output), args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, args.Scale, StartOnDevice(args.Step));
            return;
        }
        TensorCoreAttention(args, 1, q, keys, values, c.Shape.Capacity, 0, output);
    }

    /// <summary>
    /// Tensor-core attention (<c>attention_decode</c> for a decode step's rows; for prefill <c>attention_wgmma</c> on Hopper, else <c>attention_mma</c>) over
    /// <paramref name="sequences"/> sequences of <c>args.Tokens</c> queries each (sequence s's cache
    /// <paramref name="sequenceStride"/> elements after s − 1's), then <c>attention_combine</c> if the keys were split.
    /// </summary>
    /// <param name="rowLse">With <paramref name="lseEntry"/> (an entry point of the kernel's source that writes
    /// <c>AttentionParams.lse</c>): fp32 <c>[sequences × tokens, heads]</c> receives each row's natural-log log-sum-exp of the
    /// scaled scores — from the kernel with one split, else merged from the splits' (max, sum) by <c>combine_log_sum_exp</c>.</param>
    private void TensorCoreAttention(AttentionArgs args, int sequences, DeviceTensor q, nint keys, nint values, int capacity, long sequenceStride, DeviceTensor output,
        string? lseEntry = null, nint rowLse = 0)
    {
        var shape = new AttentionShape(args.Tokens, args.Heads / args.KvHeads, args.KvHeads, args.HeadDim, sequences);
        var (kernel, function, plan) = PlanAttention(shape, args.StartPosition);
        _recording?.Attention.TryAdd(shape, (plan.Kernel, plan.Splits));
        string entry = lseEntry ?? kernel.Function;
        if (lseEntry is not null)
        {
            function = TensorCoreFunction(args.HeadDim, shape.Group, kernel, (kernel.Source, lseEntry));
        }
        long queryRows = (long)sequences * args.Tokens * args.Heads;
        var parameters = new AttentionParams
        {
            Q = In(q), KCache = keys, VCache = values, Out = Out(output), StartAt = StartOnDevice(args.Step), SequenceStride = sequenceStride,
            Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads, Capacity = capacity, Start = args.StartPosition, Scale = args.Scale,
            Lse = plan.Splits == 1 ? rowLse : 0,
        };
        if (plan.Splits > 1)
        {
            parameters.PartialOut = Scratch(ref _partialOut, queryRows * plan.Splits * args.HeadDim * sizeof(float)).Pointer;
            parameters.PartialMl = Scratch(ref _partialMl, queryRows * plan.Splits * 2 * sizeof(float)).Pointer;
        }
        // attention_decode waits for the kernel before it (decode_attend); the prefill kernels start after it ends.
        LaunchWith(function.Function, entry, new Dim3((uint)plan.Splits, (uint)plan.RowTiles, (uint)(sequences * args.KvHeads)), (uint)kernel.Threads, (uint)function.SharedBytes, parameters,
            dependent: kernel.Kind == AttentionKernelKind.Decode);
        if (plan.Splits > 1)
        {
            Launch(CombineModule(args.HeadDim), "attention_combine", new Dim3((uint)queryRows, 1, 1), (uint)args.HeadDim * CombineLanes, dependent: true, parameters.PartialOut, parameters.PartialMl, Out(output), plan.Splits);
            if (rowLse != 0)
            {
                CombineLogSumExp(args.HeadDim, parameters.PartialMl, rowLse, (int)queryRows, plan.Splits);
            }
        }
    }

    /// <summary>
    /// The kernel, its compiled function and the launch plan for one attention call at <paramref name="startPosition"/>;
    /// a recorded step replays only where this gives the plan it was recorded with.
    /// </summary>
    private (AttentionKernel Kernel, TensorCoreFunction Function, AttentionLaunchPlan Plan) PlanAttention(AttentionShape shape, int startPosition)
    {
        var kernel = KernelFor(shape);
        var function = TensorCoreFunction(shape.HeadDim, shape.Group, kernel);
        var plan = AttentionLaunch.Choose(kernel, shape.Tokens, shape.Group, shape.KvHeads, shape.Sequences, startPosition + shape.Tokens, _device.Multiprocessors, function.ResidentBlocks, Tuning.Splits);
        return (kernel, function, plan);
    }

    /// <summary>The specialisation an attention call of <paramref name="shape"/> runs: the tuning's override, else <see cref="AttentionKernel.For"/>'s.</summary>
    private AttentionKernel KernelFor(AttentionShape shape)
    {
        bool decode = shape.Tokens * shape.Group <= AttentionKernel.DecodeRows;
        return (decode ? Tuning.Decode : Tuning.Prefill) ?? AttentionKernel.For(shape.Tokens * shape.Group, shape.HeadDim, Hopper, _device.MaxSharedMemoryOptin);
    }

    /// <summary>Threads per head dimension in <c>attention_combine</c> (its COMBINE_LANES), each summing a share of the splits.</summary>
    private const uint CombineLanes = 4;

    /// <summary>Overrides of the attention kernels' specialisation and split count, for benchmark sweeps; empty by default.</summary>
    public AttentionTuning Tuning { get; set; } = new();

    /// <summary>attention_simple.cu (<c>attention_dense</c>) for (head dim, group).</summary>
    private CudaModule SimpleModule(int headDim, int group)
    {
        if (!_simpleModules.TryGetValue((headDim, group), out var module))
        {
            module = Module("attention_simple.cu", AttentionDefines(headDim, group));
            _simpleModules[(headDim, group)] = module;
        }
        return module;
    }

    /// <summary>attention_combine.cu (<c>attention_combine</c>, which merges the splits of any split-KV launch) for a head dim.</summary>
    private CudaModule CombineModule(int headDim)
    {
        if (!_combineModules.TryGetValue(headDim, out var module))
        {
            module = Module("attention_combine.cu", AttentionDefines(headDim));
            _combineModules[headDim] = module;
        }
        return module;
    }

    /// <summary>The defines every attention source is specialised by: HEAD_DIM, and GROUP where given.</summary>
    private static Dictionary<string, string> AttentionDefines(int headDim, int? group = null)
    {
        var defines = new Dictionary<string, string> { ["HEAD_DIM"] = headDim.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        if (group is { } g)
        {
            defines["GROUP"] = g.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        return defines;
    }

    /// <summary>The defines of a tensor-core source specialised for (head dim, group, kernel): <see cref="AttentionKernel.Defines"/>'s too.</summary>
    private static Dictionary<string, string> AttentionDefines(int headDim, int group, AttentionKernel kernel)
    {
        var defines = AttentionDefines(headDim, group);
        foreach (var (define, value) in kernel.Defines())
        {
            defines[define] = value;
        }
        return defines;
    }

    /// <summary>
    /// The tensor-core attention kernel specialised for (head dim, group, kernel) — or <paramref name="other"/>, a kernel that
    /// takes the same specialisation and shared memory (attention_decode.cu's <c>sparse_decode_mma</c>, decode_scores.cu's
    /// <c>decode_scores_mma</c>): its dynamic shared memory opted in, and how many of its blocks the driver can keep resident
    /// on a multiprocessor (the split heuristic's wave size).
    /// </summary>
    private TensorCoreFunction TensorCoreFunction(int headDim, int group, AttentionKernel kernel, (string Source, string Function)? other = null)
    {
        var (source, name) = other ?? (kernel.Source, kernel.Function);
        if (!_tensorCoreFunctions.TryGetValue((headDim, group, kernel, name), out var entry))
        {
            if (kernel.Kind == AttentionKernelKind.Wgmma && !AttentionHeadDims.RunsWgmma(headDim, Hopper))
            {
                throw new KascadeException($"attention kernel {kernel} needs a Hopper GPU (sm_90a) and a head dim of 64 or 128; this is {_device.Architecture}, head dim {headDim}");
            }
            nint handle = Module(source, AttentionDefines(headDim, group, kernel)).Function(name);
            int shared = kernel.SharedBytes(headDim);
            if (shared > _device.MaxSharedMemoryOptin)
            {
                throw new KascadeException($"attention kernel {kernel} needs {shared} bytes of shared memory; {_device.Name} allows {_device.MaxSharedMemoryOptin}");
            }
            CudaCheck.ThrowIfFailed(Driver.cuFuncSetAttribute(handle, CuFunctionAttribute.MaxDynamicSharedSizeBytes, shared), $"cuFuncSetAttribute({name})");
            CudaCheck.ThrowIfFailed(Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(out int resident, handle, kernel.Threads, (nuint)shared), $"cuOccupancyMaxActiveBlocksPerMultiprocessor({name})");
            entry = new TensorCoreFunction(handle, shared, resident);
            _tensorCoreFunctions[(headDim, group, kernel, name)] = entry;
        }
        return entry;
    }

    private void DisposeAttentionBuffers()
    {
        _partialOut?.Dispose();
        _partialMl?.Dispose();
    }
}
