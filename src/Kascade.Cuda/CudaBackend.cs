using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>fp32 activations <c>[Rows, Cols]</c> in device memory.</summary>
public sealed class CudaTensor : DeviceTensor
{
    private readonly DeviceMemory _memory;
    private readonly bool _ownsMemory;

    internal CudaTensor(DeviceMemory memory, long offsetBytes, int rows, int cols, bool ownsMemory)
        : base(rows, cols)
    {
        _memory = memory;
        _ownsMemory = ownsMemory;
        OffsetBytes = offsetBytes;
    }

    internal long OffsetBytes { get; }

    internal nint Pointer => _memory.Pointer + (nint)OffsetBytes;

    internal long Elements => (long)Rows * Cols;

    public override DeviceTensor Take(int rows) => Slice(0, rows);

    public override DeviceTensor Slice(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, Rows);
        return new CudaTensor(_memory, OffsetBytes + (long)start * Cols * sizeof(float), count, Cols, ownsMemory: false);
    }

    /// <summary>Views share the allocation; only the tensor made by Allocate frees it.</summary>
    public override void Dispose()
    {
        if (_ownsMemory)
        {
            _memory.Dispose();
        }
    }
}

/// <summary>A weight on the GPU: matrices as bf16 <c>[Rows, Cols]</c>, vectors (norms, biases) as fp32.</summary>
public sealed class CudaWeight : Weight
{
    internal CudaWeight(string name, DType dtype, int rows, int cols, DeviceMemory memory)
        : base(name, dtype, rows, cols)
    {
        Memory = memory;
    }

    internal DeviceMemory Memory { get; }

    internal nint Pointer => Memory.Pointer;

    public override void Dispose() => Memory.Dispose();
}

/// <summary>bf16 cache, per layer <c>[KvHeads, Capacity, HeadDim]</c> for keys and for values.</summary>
public sealed class CudaKvCache : KvCache
{
    internal CudaKvCache(KvCacheShape shape)
        : base(shape)
    {
        LayerBytes = (long)shape.KvHeads * shape.Capacity * shape.HeadDim * 2;
        Keys = DeviceMemory.Allocate(LayerBytes * shape.Layers);
        try
        {
            Values = DeviceMemory.Allocate(LayerBytes * shape.Layers);
        }
        catch
        {
            Keys.Dispose();
            throw;
        }
    }

    internal long LayerBytes { get; }

    internal DeviceMemory Keys { get; }

    internal DeviceMemory Values { get; }

    /// <summary>Layer <paramref name="layer"/>'s keys, bf16 <c>[KvHeads, Capacity, HeadDim]</c>.</summary>
    internal nint LayerKeys(int layer) => Keys.Pointer + (nint)(LayerBytes * layer);

    /// <summary>Layer <paramref name="layer"/>'s values, as <see cref="LayerKeys"/>.</summary>
    internal nint LayerValues(int layer) => Values.Pointer + (nint)(LayerBytes * layer);

    public override void Dispose()
    {
        Keys.Dispose();
        Values.Dispose();
    }
}

/// <summary>
/// A step's inputs in device memory — draw count (int64), start position (int32), token ids (int32 <c>[MaxTokens]</c>) —
/// and the page-locked host memory they are written from and read into.
/// </summary>
public sealed class CudaStepInputs : StepInputs
{
    private const int PositionOffset = 8, IdsOffset = 12;

    internal CudaStepInputs(int maxTokens)
        : base(maxTokens)
    {
        long bytes = IdsOffset + (long)maxTokens * sizeof(int);
        Device = DeviceMemory.Allocate(bytes);
        // The draw count starts at 0 (cuMemAlloc does not clear).
        CudaCheck.ThrowIfFailed(Driver.cuMemsetD8_v2(Device.Pointer, 0, (nuint)bytes), "cuMemsetD8");
        Host = PinnedMemory.Allocate(bytes);
        Copied = EventHandle.Create();
    }

    internal DeviceMemory Device { get; }

    /// <summary>The staging copy: WriteStep fills its position and ids; ReadTokens receives ids into it.</summary>
    internal PinnedMemory Host { get; }

    /// <summary>Recorded after the last copy that reads or writes <see cref="Host"/>; waited for before the host touches it again.</summary>
    internal EventHandle Copied { get; }

    internal nint DrawCount => Device.Pointer;

    internal nint Position => Device.Pointer + PositionOffset;

    internal nint Ids => Device.Pointer + IdsOffset;

    /// <summary>Where WriteStep stages the position and the ids, in the device layout.</summary>
    internal nint HostPosition => Host.Pointer + PositionOffset;

    /// <summary>Where ReadTokens receives the ids.</summary>
    internal nint HostIdsAddress => Host.Pointer + IdsOffset;

    internal static long PositionAndIdsBytes(int tokens) => IdsOffset - PositionOffset + (long)tokens * sizeof(int);

    internal unsafe Span<int> HostPositionAndIds(int tokens) => new((void*)HostPosition, 1 + tokens);

    internal unsafe Span<int> HostIds(int tokens) => new((void*)HostIdsAddress, tokens);

    public override void Dispose()
    {
        Device.Dispose();
        Host.Dispose();
        Copied.Dispose();
    }
}

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
}

/// <summary>What an attention call's plan depends on besides the position: rows per sequence, group, KV heads, head dim, sequences.</summary>
internal readonly record struct AttentionShape(int Tokens, int Group, int KvHeads, int HeadDim, int Sequences);

/// <summary>A compiled tensor-core attention specialisation and what its launch needs to know.</summary>
internal sealed record TensorCoreFunction(CudaModule Module, nint Function, int SharedBytes, int ResidentBlocks);

/// <summary>A launch grid.</summary>
internal readonly record struct Dim3(uint X, uint Y, uint Z);

/// <summary>One kernel argument as the 8 bytes the launch passes by address (pointers, ints, longs, floats).</summary>
internal readonly struct KernelArg
{
    private KernelArg(long bits) => Bits = bits;

    public long Bits { get; }

    public static implicit operator KernelArg(nint value) => new(value);

    public static implicit operator KernelArg(int value) => new(value);

    public static implicit operator KernelArg(long value) => new(value);

    public static implicit operator KernelArg(float value) => new(BitConverter.SingleToInt32Bits(value));
}

/// <summary>
/// The CUDA backend: fp32 activations, bf16 weights and KV cache, GEMMs through cuBLASLt (bf16 in, fp32 accumulate
/// and out), our kernels for the rest, compiled by NVRTC for the device on first use.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    private const int Threads = 256;

    /// <summary>Rows of x up to which <c>gemv_bf16</c> replaces the cuBLASLt GEMM (its GEMV_ROWS).</summary>
    private const int GemvMaxRows = 8;

    private readonly CudaDevice _device;
    private readonly StreamHandle _stream;
    private readonly LtGemm _gemm;
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<string, CudaModule> _modules = [];
    private readonly Dictionary<(int HeadDim, int Group), CudaModule> _attentionModules = [];
    private readonly Dictionary<(int HeadDim, int Group, AttentionKernel Kernel), TensorCoreFunction> _tensorCoreFunctions = [];
    private CudaModule? _ops, _sampling;
    private DeviceMemory? _ropeCos, _ropeSin;
    private DeviceMemory? _bf16Scratch;
    private StepRecording? _recording;

    /// <summary>Bumped whenever a buffer a recorded step may point at (scratch, rotary tables) is replaced.</summary>
    private int _bufferGeneration;

    /// <summary>Replaced buffers that a recording in progress may still reach; freed after it.</summary>
    private readonly List<DeviceMemory> _retired = [];
    private DeviceMemory? _partialOut, _partialMl;
    private DeviceMemory? _selectionOffsets, _selectionPositions;

    public CudaBackend(int ordinal = 0, string? kernelCache = null)
    {
        _device = CudaDevice.Open(ordinal);
        _stream = StreamHandle.Create();
        _gemm = new LtGemm();
        _compiler = new KernelCompiler(_device.Architecture, kernelCache);
    }

    public string Name => $"cuda ({_device.Name}, {_device.Architecture})";

    public CudaDevice Device => _device;

    /// <summary>
    /// Every registered method: dense, the Kascade variants and the oracle on the device's select/attend ops
    /// (<c>selection.cu</c>), the baselines by host-side selection over <c>attention_gathered</c>.
    /// </summary>
    public static bool RunsMethod(AttentionMethod method) => AttentionMethods.All.Any(m => m.Method == method);

    public bool Runs(AttentionMethod method) => RunsMethod(method);

    public IReadOnlyList<string> Supports(ModelConfig config)
    {
        var reasons = new List<string>();
        if (config.HeadDim % 32 != 0 || config.HeadDim > 256)
        {
            reasons.Add($"head_dim {config.HeadDim} is not supported by the attention kernels (a multiple of 32 up to 256; tensor cores up to 128)");
        }
        return reasons;
    }

    public Weight LoadWeight(WeightSource source)
    {
        long elements = (long)source.Rows * source.Cols;
        bool vector = source.Rows == 1;
        var host = new float[elements];
        DTypes.ToSingle(source.DType, new ReadOnlySpan<byte>((void*)source.Pointer, checked((int)(elements * source.DType.SizeOf()))), host);
        DeviceMemory memory;
        if (vector)
        {
            memory = DeviceMemory.Allocate(elements * sizeof(float));
            fixed (float* p = host)
            {
                Copy(memory.Pointer, (nint)p, elements * sizeof(float));
            }
        }
        else
        {
            var bf16 = new ushort[elements];
            for (long i = 0; i < elements; i++)
            {
                bf16[i] = DTypes.SingleToBf16(host[i]);
            }
            memory = DeviceMemory.Allocate(elements * 2);
            fixed (ushort* p = bf16)
            {
                Copy(memory.Pointer, (nint)p, elements * 2);
            }
        }
        return new CudaWeight(source.Name, source.DType, source.Rows, source.Cols, memory);
    }

    public Weight RandomWeight(string name, int rows, int cols, float center, float scale, ulong seed)
    {
        long n = (long)rows * cols;
        bool vector = rows == 1;
        var memory = DeviceMemory.Allocate(n * (vector ? sizeof(float) : 2));
        Launch(Ops, vector ? "fill_random_f32" : "fill_random_bf16", Blocks(n), Threads, memory.Pointer, n, center, scale, (long)RandomWeights.Key(name, seed));
        return new CudaWeight(name, vector ? DType.F32 : DType.BF16, rows, cols, memory);
    }

    public DeviceTensor Allocate(int rows, int cols) => new CudaTensor(DeviceMemory.Allocate((long)rows * cols * sizeof(float)), 0, rows, cols, ownsMemory: true);

    public KvCache AllocateKvCache(KvCacheShape shape) => new CudaKvCache(shape);

    public void SetRope(RopeConfig rope, int headDim, int positions)
    {
        var (cos, sin) = Rope.Tables(rope, headDim, positions);
        _ropeCos?.Dispose();
        _ropeSin?.Dispose();
        _ropeCos = Upload(cos);
        _ropeSin = Upload(sin);
        _bufferGeneration++;
    }

    public StepInputs AllocateStepInputs(int maxTokens) => new CudaStepInputs(maxTokens);

    public void WriteStep(StepInputs step, ReadOnlySpan<int> ids, int startPosition)
    {
        var s = (CudaStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ids.Length, s.MaxTokens);
        ThrowIfRecording("WriteStep");
        // The previous copy out of the staging memory may still be queued: wait for it, not for the whole stream.
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        var staging = s.HostPositionAndIds(ids.Length);
        staging[0] = startPosition;
        ids.CopyTo(staging[1..]);
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoDAsync_v2(s.Position, s.HostPosition, (nuint)CudaStepInputs.PositionAndIdsBytes(ids.Length), _stream.Value), "cuMemcpyHtoDAsync");
        CudaCheck.ThrowIfFailed(Driver.cuEventRecord(s.Copied.Value, _stream.Value), "cuEventRecord");
    }

    public void Embed(StepInputs step, Weight table, DeviceTensor output)
    {
        var w = (CudaWeight)table;
        Launch(Ops, "embed_bf16", (uint)output.Rows, Threads, w.Pointer, ((CudaStepInputs)step).Ids, Out(output), output.Cols);
    }

    public void RmsNorm(DeviceTensor x, Weight weight, int width, float eps, DeviceTensor output)
    {
        int groups = (int)((long)x.Rows * x.Cols / width);
        Launch(Ops, "rmsnorm", (uint)groups, width >= 256 ? 256u : 64u, In(x), ((CudaWeight)weight).Pointer, Out(output), width, eps);
    }

    public void MatMul(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output)
    {
        var w = (CudaWeight)weight;
        int m = x.Rows, k = x.Cols, n = w.Rows;
        if (k != w.Cols || output.Cols != n || output.Rows != m)
        {
            throw new ArgumentException($"matmul shapes: x [{m}, {k}] · {w.Name} [{n}, {w.Cols}]ᵀ → [{output.Rows}, {output.Cols}]");
        }
        if (m <= GemvMaxRows && k % 8 == 0)
        {
            // Decode: a weight-streaming GEMV reads W once at bandwidth, with x kept in fp32.
            Launch(Ops, "gemv_bf16", (uint)((n + 7) / 8), 256, In(x), w.Pointer, Out(output), m, k, n);
        }
        else
        {
            var xb = Scratch(ref _bf16Scratch, (long)m * k * 2);
            long count = (long)m * k;
            Launch(Ops, "to_bf16", Blocks(count), Threads, In(x), xb.Pointer, count);
            _gemm.Run(w.Pointer, xb.Pointer, Out(output), m, n, k, _stream.Value, w.Name);
        }
        if (bias is not null)
        {
            long total = (long)m * n;
            Launch(Ops, "add_bias", Blocks(total), Threads, Out(output), ((CudaWeight)bias).Pointer, total, n);
        }
    }

    public void ApplyRope(DeviceTensor x, RopeArgs args) =>
        Launch(Ops, "rope", (uint)x.Rows, Threads, Out(x), _ropeCos!.Pointer, _ropeSin!.Pointer, args.Heads, args.HeadDim, args.StartPosition, StartOnDevice(args.Step));

    public void SwiGlu(DeviceTensor gate, DeviceTensor up)
    {
        long n = ((CudaTensor)gate).Elements;
        Launch(Ops, "swiglu", Blocks(n), Threads, Out(gate), In(up), n);
    }

    public void Add(DeviceTensor x, DeviceTensor y)
    {
        long n = ((CudaTensor)x).Elements;
        Launch(Ops, "add", Blocks(n), Threads, Out(x), In(y), n);
    }

    public void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v, StepInputs? step = null)
    {
        var c = (CudaKvCache)cache;
        if (startPosition + k.Rows > c.Shape.Capacity)
        {
            throw new InvalidOperationException($"KV cache holds {c.Shape.Capacity} positions; asked to write up to {startPosition + k.Rows}");
        }
        Launch(Ops, "kv_append", (uint)k.Rows, Threads, In(k), In(v), c.LayerKeys(layer), c.LayerValues(layer), c.Shape.KvHeads, c.Shape.HeadDim, c.Shape.Capacity, startPosition, StartOnDevice(step));
    }

    public void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        nint keys = c.LayerKeys(args.Layer), values = c.LayerValues(args.Layer);
        if (!TensorCoreHeadDim(args.HeadDim))
        {
            int warps = args.Tokens * args.Heads;
            Launch(AttentionModule(args.HeadDim, args.Heads / args.KvHeads), "attention_dense", (uint)((warps + 3) / 4), 128, In(q), keys, values, Out(output), args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, args.Scale, StartOnDevice(args.Step));
            return;
        }
        TensorCoreAttention(args, 1, q, keys, values, c.Shape.Capacity, 0, output);
    }

    /// <summary>
    /// Decode attention for a batch: query row b (of <c>Tokens</c> = batch) attends over the first
    /// <c>StartPosition + 1</c> keys of sequence b, whose cache is layer b of <paramref name="cache"/> (Layers = batch).
    /// </summary>
    public void BatchedDecodeAttention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        if (c.Shape.Layers < args.Tokens)
        {
            throw new ArgumentException($"a batch of {args.Tokens} needs a cache of at least {args.Tokens} sequences (layers)");
        }
        if (!TensorCoreHeadDim(args.HeadDim))
        {
            throw new KascadeException($"batched decode needs a head dim that is a multiple of 32 up to 128, not {args.HeadDim}");
        }
        TensorCoreAttention(args with { Tokens = 1 }, args.Tokens, q, c.Keys.Pointer, c.Values.Pointer, c.Shape.Capacity, c.LayerBytes / 2, output);
    }

    /// <summary>Head dims the tensor-core kernels are compiled for; others run the reference <c>attention_dense</c>.</summary>
    private static bool TensorCoreHeadDim(int headDim) => headDim % 32 == 0 && headDim <= 128;

    /// <summary>
    /// Tensor-core attention (<c>attention_decode</c> for a decode step's rows; for prefill <c>attention_wgmma</c> on Hopper, else <c>attention_mma</c>) over
    /// <paramref name="sequences"/> sequences of <c>args.Tokens</c> queries each (sequence s's cache
    /// <paramref name="sequenceStride"/> elements after s − 1's), then <c>attention_combine</c> if the keys were split.
    /// </summary>
    private void TensorCoreAttention(AttentionArgs args, int sequences, DeviceTensor q, nint keys, nint values, int capacity, long sequenceStride, DeviceTensor output)
    {
        var shape = new AttentionShape(args.Tokens, args.Heads / args.KvHeads, args.KvHeads, args.HeadDim, sequences);
        var (kernel, function, plan) = PlanAttention(shape, args.StartPosition);
        _recording?.Attention.TryAdd(shape, (plan.Kernel, plan.Splits));
        long queryRows = (long)sequences * args.Tokens * args.Heads;
        var parameters = new AttentionParams
        {
            Q = In(q), KCache = keys, VCache = values, Out = Out(output), StartAt = StartOnDevice(args.Step), SequenceStride = sequenceStride,
            Tokens = args.Tokens, Heads = args.Heads, KvHeads = args.KvHeads, Capacity = capacity, Start = args.StartPosition, Scale = args.Scale,
        };
        if (plan.Splits > 1)
        {
            parameters.PartialOut = Scratch(ref _partialOut, queryRows * plan.Splits * args.HeadDim * sizeof(float)).Pointer;
            parameters.PartialMl = Scratch(ref _partialMl, queryRows * plan.Splits * 2 * sizeof(float)).Pointer;
        }
        LaunchWith(function.Function, kernel.Function, new Dim3((uint)plan.Splits, (uint)plan.RowTiles, (uint)(sequences * args.KvHeads)), (uint)kernel.Threads, (uint)function.SharedBytes, parameters);
        if (plan.Splits > 1)
        {
            Launch(function.Module, "attention_combine", new Dim3((uint)queryRows, 1, 1), (uint)args.HeadDim * CombineLanes, dependent: true, parameters.PartialOut, parameters.PartialMl, Out(output), plan.Splits);
        }
    }

    /// <summary>
    /// The kernel, its compiled function and the launch plan for one attention call at <paramref name="startPosition"/>;
    /// a recorded step replays only where this gives the plan it was recorded with.
    /// </summary>
    private (AttentionKernel Kernel, TensorCoreFunction Function, AttentionLaunchPlan Plan) PlanAttention(AttentionShape shape, int startPosition)
    {
        bool decode = shape.Tokens * shape.Group <= AttentionKernel.DecodeRows;
        var kernel = (decode ? Tuning.Decode : Tuning.Prefill) ?? AttentionKernel.For(shape.Tokens * shape.Group, shape.HeadDim, Hopper, _device.MaxSharedMemoryOptin);
        var function = TensorCoreFunction(shape.HeadDim, shape.Group, kernel);
        var plan = AttentionLaunch.Choose(kernel, shape.Tokens, shape.Group, shape.KvHeads, shape.Sequences, startPosition + shape.Tokens, _device.Multiprocessors, function.ResidentBlocks, Tuning.Splits);
        return (kernel, function, plan);
    }

    /// <summary>Threads per head dimension in <c>attention_combine</c> (its COMBINE_LANES), each summing a share of the splits.</summary>
    private const uint CombineLanes = 4;

    private bool Hopper => _device.Hopper;

    /// <summary>Overrides of the attention kernels' specialisation and split count, for benchmark sweeps; empty by default.</summary>
    public AttentionTuning Tuning { get; set; } = new();

    /// <summary>
    /// The baselines' gathered attention (<c>attention_gathered</c>): the key sets are flattened on the host into
    /// per-(token, head) offsets and positions and uploaded each call. For accuracy work; not a fast path.
    /// </summary>
    public void SelectedAttention(AttentionArgs args, KeySelection selection, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        selection.CheckVisible(args.StartPosition);
        var c = (CudaKvCache)cache;
        int items = args.Tokens * args.Heads;
        var offsets = new int[items + 1];
        for (int i = 0; i < items; i++)
        {
            offsets[i + 1] = offsets[i] + selection[i / args.Heads, i % args.Heads].Length;
        }
        var positions = new int[Math.Max(offsets[items], 1)];
        for (int i = 0; i < items; i++)
        {
            selection[i / args.Heads, i % args.Heads].CopyTo(positions, offsets[i]);
        }
        var offsetBuffer = Scratch(ref _selectionOffsets, offsets.Length * sizeof(int));
        var positionBuffer = Scratch(ref _selectionPositions, positions.Length * sizeof(int));
        fixed (int* o = offsets, p = positions)
        {
            Copy(offsetBuffer.Pointer, (nint)o, offsets.Length * sizeof(int));
            Copy(positionBuffer.Pointer, (nint)p, positions.Length * sizeof(int));
        }
        nint keys = c.LayerKeys(args.Layer), values = c.LayerValues(args.Layer);
        Launch(AttentionModule(args.HeadDim, args.Heads / args.KvHeads), "attention_gathered", (uint)((items + 3) / 4), 128,
            In(q), keys, values, Out(output), offsetBuffer.Pointer, positionBuffer.Pointer, args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.Scale);
    }

    public void Sample(DeviceTensor logits, SamplingOptions options, StepInputs step)
    {
        options.Check();
        var s = (CudaStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(logits.Rows, s.MaxTokens);
        Launch(SamplingModule, "sample_tokens", (uint)logits.Rows, SampleThreads, In(logits), logits.Cols, s.Ids, s.DrawCount, options.Seed, options.Temperature, options.TopP, options.TopK);
        Launch(Ops, "step_add", 1, 1, s.Position, 0, s.DrawCount, logits.Rows);
    }

    public void Advance(StepInputs step, int tokens)
    {
        var s = (CudaStepInputs)step;
        Launch(Ops, "step_add", 1, 1, s.Position, tokens, s.DrawCount, 0);
    }

    public void ReadTokens(StepInputs step, Span<int> ids)
    {
        var s = (CudaStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ids.Length, s.MaxTokens);
        ThrowIfRecording("ReadTokens");
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoHAsync_v2(s.HostIdsAddress, s.Ids, (nuint)(ids.Length * sizeof(int)), _stream.Value), "cuMemcpyDtoHAsync");
        CudaCheck.ThrowIfFailed(Driver.cuEventRecord(s.Copied.Value, _stream.Value), "cuEventRecord");
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        s.HostIds(ids.Length).CopyTo(ids);
    }

    /// <summary>
    /// Records the ops into a CUDA graph (stream capture): one launch replays them all, so a decode step costs one
    /// launch instead of one per kernel. Null when <see cref="RecordSteps"/> is off.
    /// </summary>
    public IRecordedStep? Record(Action issue)
    {
        if (!RecordSteps)
        {
            return null;
        }
        if (_recording is not null)
        {
            throw new InvalidOperationException("a step is already being recorded");
        }
        // A buffer that grows during the capture leaves the ops captured before it pointing at the old one: capture
        // again, now that every buffer has its size.
        while (true)
        {
            var recording = new StepRecording();
            _recording = recording;
            // Relaxed: kernels compiled and buffers allocated on first use during the capture are allowed.
            CudaCheck.ThrowIfFailed(Driver.cuStreamBeginCapture_v2(_stream.Value, CuStreamCaptureMode.Relaxed), "cuStreamBeginCapture");
            nint graph = 0;
            bool grew;
            try
            {
                try
                {
                    issue();
                }
                finally
                {
                    _recording = null;
                    var ended = Driver.cuStreamEndCapture(_stream.Value, out graph);
                    grew = _retired.Count > 0;
                    foreach (var buffer in _retired)
                    {
                        buffer.Dispose();
                    }
                    _retired.Clear();
                    CudaCheck.ThrowIfFailed(ended, "cuStreamEndCapture");
                }
                if (!grew)
                {
                    return new CudaRecordedStep(this, GraphExecHandle.Instantiate(graph), recording.Attention, _bufferGeneration);
                }
            }
            finally
            {
                if (graph != 0)
                {
                    Driver.cuGraphDestroy(graph);
                }
            }
        }
    }

    /// <summary>Whether <see cref="Record"/> makes CUDA graphs (on by default; off runs every op as it is issued, for comparisons).</summary>
    public bool RecordSteps { get; set; } = true;

    /// <summary>What a recording in progress has launched that depends on the position: its attention calls' shapes and plans.</summary>
    private sealed class StepRecording
    {
        public Dictionary<AttentionShape, (AttentionKernel Kernel, int Splits)> Attention { get; } = [];
    }

    /// <summary>A decode step as an instantiated CUDA graph.</summary>
    private sealed class CudaRecordedStep(CudaBackend backend, GraphExecHandle graph, Dictionary<AttentionShape, (AttentionKernel Kernel, int Splits)> attention, int generation) : IRecordedStep
    {
        public bool TryReplay(int startPosition)
        {
            if (generation != backend._bufferGeneration)
            {
                return false;
            }
            foreach (var (shape, recorded) in attention)
            {
                var plan = backend.PlanAttention(shape, startPosition).Plan;
                if (plan.Kernel != recorded.Kernel || plan.Splits != recorded.Splits)
                {
                    return false;
                }
            }
            CudaCheck.ThrowIfFailed(Driver.cuGraphLaunch(graph.Value, backend._stream.Value), "cuGraphLaunch");
            return true;
        }

        public void Dispose() => graph.Dispose();
    }

    /// <summary>
    /// The device address of a step's start position for a kernel, or 0 (the kernel uses the value it is given). A
    /// recorded step replays at later positions, so every position-dependent op in one must read it from its step.
    /// </summary>
    private nint StartOnDevice(StepInputs? step)
    {
        if (step is null && _recording is not null)
        {
            throw new InvalidOperationException("an op in a recorded step must read its start position from a StepInputs");
        }
        return step is CudaStepInputs s ? s.Position : 0;
    }

    private void ThrowIfRecording(string what)
    {
        if (_recording is not null)
        {
            throw new InvalidOperationException($"{what} waits for the host and cannot be part of a recorded step");
        }
    }

    public void ReadKeys(KvCache cache, int layer, int count, Span<float> destination)
    {
        var c = (CudaKvCache)cache;
        int d = c.Shape.HeadDim;
        var bits = new ushort[count * d];
        ThrowIfRecording("ReadKeys");
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        for (int h = 0; h < c.Shape.KvHeads; h++)
        {
            fixed (ushort* p = bits)
            {
                nint source = c.LayerKeys(layer) + (nint)((long)h * c.Shape.Capacity * d * sizeof(ushort));
                CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, source, (nuint)(bits.Length * sizeof(ushort))), "cuMemcpyDtoH");
            }
            DTypes.Bf16ToSingle(bits, destination.Slice(h * count * d, count * d));
        }
    }

    public void Read(DeviceTensor x, Span<float> destination)
    {
        ThrowIfRecording("Read");
        var t = (CudaTensor)x;
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        fixed (float* p = destination)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, t.Pointer, (nuint)(t.Elements * sizeof(float))), "cuMemcpyDtoH");
        }
    }

    /// <summary>A timer on this backend's stream (benchmarks), emptying the L2 by <paramref name="flush"/> before each run.</summary>
    public GpuTimer CreateTimer(L2Flush flush = L2Flush.Read) =>
        new(_stream.Value, flush, (buffer, bytes) => Launch(Ops, "read_all", (uint)(_device.Multiprocessors * 8), Threads, buffer, bytes / 16));

    /// <summary>
    /// The GPU's device-to-device copy bandwidth in GB/s, counting bytes read and written as CUDA's bandwidthTest
    /// does: the practical ceiling a memory-bound kernel is judged against (DESIGN §7).
    /// </summary>
    public double CopyBandwidthGBps(long bytes = 1L << 30)
    {
        using var source = DeviceMemory.Allocate(bytes);
        using var destination = DeviceMemory.Allocate(bytes);
        using var timer = CreateTimer();
        double ms = timer.MedianMilliseconds(() => CudaCheck.ThrowIfFailed(
            Driver.cuMemcpyDtoDAsync_v2(destination.Pointer, source.Pointer, (nuint)bytes, _stream.Value), "cuMemcpyDtoDAsync"), 10);
        return 2.0 * bytes / (ms * 1e-3) / 1e9;
    }

    public void Write(DeviceTensor x, ReadOnlySpan<float> values)
    {
        fixed (float* p = values)
        {
            Copy(((CudaTensor)x).Pointer, (nint)p, (long)values.Length * sizeof(float));
        }
    }

    private DeviceMemory Upload(float[] values)
    {
        var memory = DeviceMemory.Allocate((long)values.Length * sizeof(float));
        fixed (float* p = values)
        {
            Copy(memory.Pointer, (nint)p, (long)values.Length * sizeof(float));
        }
        return memory;
    }

    private void Copy(nint destination, nint source, long bytes)
    {
        ThrowIfRecording("a host-to-device copy");
        // Host→device copies of pageable memory are synchronous; finish queued kernels that may read the target first.
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoD_v2(destination, source, (nuint)bytes), "cuMemcpyHtoD");
    }

    /// <summary>A reusable device buffer of at least <paramref name="bytes"/>, grown (never per token once warm).</summary>
    private DeviceMemory Scratch(ref DeviceMemory? buffer, long bytes)
    {
        if (buffer is null || buffer.Bytes < bytes)
        {
            if (buffer is not null && _recording is not null)
            {
                // A recording cannot wait for the stream; the old buffer lives until the recording ends.
                _retired.Add(buffer);
            }
            else if (buffer is not null)
            {
                CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
                buffer.Dispose();
            }
            buffer = DeviceMemory.Allocate(Math.Max(bytes, 1 << 16));
            _bufferGeneration++;
        }
        return buffer;
    }

    private static uint Blocks(long n) => (uint)Math.Clamp((n + Threads - 1) / Threads, 1, 65535);

    private static nint In(DeviceTensor t) => ((CudaTensor)t).Pointer;

    private static nint Out(DeviceTensor t) => ((CudaTensor)t).Pointer;

    private CudaModule Ops => _ops ??= Module("ops.cu", new Dictionary<string, string>());

    private CudaModule SamplingModule => _sampling ??= Module("sampling.cu", new Dictionary<string, string>());

    /// <summary>Threads of a <c>sample_tokens</c> block (its SAMPLE_THREADS).</summary>
    private const uint SampleThreads = 1024;

    private CudaModule AttentionModule(int headDim, int group)
    {
        if (!_attentionModules.TryGetValue((headDim, group), out var module))
        {
            module = Module("attention.cu", new Dictionary<string, string>
            {
                ["HEAD_DIM"] = headDim.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["GROUP"] = group.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
            _attentionModules[(headDim, group)] = module;
        }
        return module;
    }

    /// <summary>
    /// The tensor-core attention kernel specialised for (head dim, group, kernel): its dynamic shared memory opted in, and how many
    /// of its blocks the driver can keep resident on a multiprocessor (the split heuristic's wave size).
    /// </summary>
    private TensorCoreFunction TensorCoreFunction(int headDim, int group, AttentionKernel kernel)
    {
        if (!_tensorCoreFunctions.TryGetValue((headDim, group, kernel), out var entry))
        {
            var defines = new Dictionary<string, string>(kernel.Defines())
            {
                ["HEAD_DIM"] = headDim.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["GROUP"] = group.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            if (kernel.Kind == AttentionKernelKind.Wgmma && (!Hopper || headDim % 64 != 0))
            {
                throw new KascadeException($"attention kernel {kernel} needs a Hopper GPU (sm_90a) and a head dim of 64 or 128; this is {_device.Architecture}, head dim {headDim}");
            }
            var module = Module("attention.cu", defines);
            nint function = module.Function(kernel.Function);
            int shared = kernel.SharedBytes(headDim);
            if (shared > _device.MaxSharedMemoryOptin)
            {
                throw new KascadeException($"attention kernel {kernel} needs {shared} bytes of shared memory; {_device.Name} allows {_device.MaxSharedMemoryOptin}");
            }
            CudaCheck.ThrowIfFailed(Driver.cuFuncSetAttribute(function, CuFunctionAttribute.MaxDynamicSharedSizeBytes, shared), $"cuFuncSetAttribute({kernel.Function})");
            CudaCheck.ThrowIfFailed(Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(out int resident, function, kernel.Threads, (nuint)shared), $"cuOccupancyMaxActiveBlocksPerMultiprocessor({kernel.Function})");
            entry = new TensorCoreFunction(module, function, shared, resident);
            _tensorCoreFunctions[(headDim, group, kernel)] = entry;
        }
        return entry;
    }

    private void Launch(CudaModule module, string name, uint grid, uint block, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module, name, new Dim3(grid, 1, 1), block, arguments);

    private void Launch(CudaModule module, string name, Dim3 grid, uint block, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module, name, grid, block, dependent: false, arguments);

    /// <summary>
    /// Launches kernel <paramref name="name"/> of <paramref name="module"/>; each argument is an 8-byte slot passed by
    /// address. The arguments live on the stack, so a launch allocates nothing. A <paramref name="dependent"/> kernel
    /// may start launching before the previous one in the stream ends (programmatic dependent launch, sm_90+); it
    /// waits for that one itself (<c>wait_for_previous_kernel</c>).
    /// </summary>
    private void Launch(CudaModule module, string name, Dim3 grid, uint block, bool dependent, params ReadOnlySpan<KernelArg> arguments)
    {
        var slots = stackalloc long[arguments.Length];
        var pointers = stackalloc void*[arguments.Length];
        for (int i = 0; i < arguments.Length; i++)
        {
            slots[i] = arguments[i].Bits;
            pointers[i] = &slots[i];
        }
        Launch(module.Function(name), name, grid, block, 0, pointers, dependent);
    }

    /// <summary>Launches a kernel whose one argument is the parameter struct <paramref name="parameters"/> (passed by address).</summary>
    private void LaunchWith<T>(nint function, string name, Dim3 grid, uint block, uint sharedBytes, T parameters)
        where T : unmanaged
    {
        void* argument = &parameters;
        Launch(function, name, grid, block, sharedBytes, &argument, dependent: false);
    }

    private void Launch(nint function, string name, Dim3 grid, uint block, uint sharedBytes, void** arguments, bool dependent)
    {
        if (!dependent || !Hopper)
        {
            CudaCheck.ThrowIfFailed(Driver.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block, 1, 1, sharedBytes, _stream.Value, arguments, null), $"cuLaunchKernel({name})");
            return;
        }
        var attribute = new CuLaunchAttribute { Id = CuLaunchAttribute.ProgrammaticStreamSerialization };
        attribute.Value[0] = 1;
        var config = new CuLaunchConfig
        {
            GridX = grid.X, GridY = grid.Y, GridZ = grid.Z, BlockX = block, BlockY = 1, BlockZ = 1, SharedBytes = sharedBytes,
            Stream = _stream.Value, Attributes = &attribute, AttributeCount = 1,
        };
        CudaCheck.ThrowIfFailed(Driver.cuLaunchKernelEx(&config, function, arguments, null), $"cuLaunchKernelEx({name})");
    }

    /// <summary>The module of <paramref name="source"/> specialised by <paramref name="defines"/>, compiled (or read from the disk cache) once.</summary>
    private CudaModule Module(string source, IReadOnlyDictionary<string, string> defines)
    {
        string key = source + string.Concat(defines.OrderBy(d => d.Key, StringComparer.Ordinal).Select(d => $";{d.Key}={d.Value}"));
        if (!_modules.TryGetValue(key, out var module))
        {
            module = CudaModule.Load(_compiler.Compile(source, defines));
            _modules[key] = module;
        }
        return module;
    }

    public void Dispose()
    {
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        foreach (var m in _modules.Values)
        {
            m.Dispose();
        }
        _ropeCos?.Dispose();
        _ropeSin?.Dispose();
        _bf16Scratch?.Dispose();
        _partialOut?.Dispose();
        _partialMl?.Dispose();
        _selectionOffsets?.Dispose();
        _selectionPositions?.Dispose();
        DisposeSelectionBuffers();
        _gemm.Dispose();
        _stream.Dispose();
        _device.Dispose();
    }
}
