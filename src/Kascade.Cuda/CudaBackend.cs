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

    public override void Dispose()
    {
        Keys.Dispose();
        Values.Dispose();
    }
}

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
/// The CUDA backend: fp32 activations, bf16 weights and KV cache, GEMMs through cuBLAS (bf16 in, fp32 accumulate
/// and out), our kernels for the rest, compiled by NVRTC for the device on first use.
/// </summary>
public sealed unsafe class CudaBackend : IBackend
{
    private const int Threads = 256;

    /// <summary>Rows of x up to which <c>gemv_bf16</c> replaces the cuBLAS GEMM (its GEMV_ROWS).</summary>
    private const int GemvMaxRows = 8;

    private readonly CudaDevice _device;
    private readonly StreamHandle _stream;
    private readonly CublasHandle _cublas;
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<string, CudaModule> _modules = [];
    private readonly Dictionary<(int HeadDim, int Group), CudaModule> _attentionModules = [];
    private CudaModule? _ops;
    private DeviceMemory? _ropeCos, _ropeSin;
    private DeviceMemory? _bf16Scratch;
    private DeviceMemory? _ids;
    private DeviceMemory? _partialOut, _partialMl;
    private DeviceMemory? _selectionOffsets, _selectionPositions;

    public CudaBackend(int ordinal = 0, string? kernelCache = null)
    {
        _device = CudaDevice.Open(ordinal);
        _stream = StreamHandle.Create();
        _cublas = CublasHandle.Create(_stream);
        _compiler = new KernelCompiler(_device.Architecture, kernelCache);
    }

    public string Name => $"cuda ({_device.Name}, {_device.Architecture})";

    public CudaDevice Device => _device;

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
    }

    public void Embed(ReadOnlySpan<int> ids, Weight table, DeviceTensor output)
    {
        var w = (CudaWeight)table;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)w.Rows)
            {
                throw new KascadeException($"token id {id} is outside the vocabulary of {w.Rows}");
            }
        }
        var buffer = Scratch(ref _ids, ids.Length * sizeof(int));
        fixed (int* p = ids)
        {
            Copy(buffer.Pointer, (nint)p, ids.Length * sizeof(int));
        }
        Launch(Ops, "embed_bf16", (uint)ids.Length, Threads, w.Pointer, buffer.Pointer, Out(output), output.Cols);
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
            // Row-major out[m, n] = x[m, k] · W[n, k]ᵀ is column-major outᵀ[n, m] = op_T(W as k×n) · (x as k×m).
            float alpha = 1f, beta = 0f;
            CudaCheck.ThrowIfFailed(
                Cublas.cublasGemmEx(_cublas.Value, Cublas.OpT, Cublas.OpN, n, m, k, &alpha, w.Pointer, CudaDataType.R16BF, k, xb.Pointer, CudaDataType.R16BF, k, &beta, Out(output), CudaDataType.R32F, n, Cublas.Compute32F, Cublas.GemmDefaultTensorOp),
                $"cublasGemmEx({w.Name}: {m}x{n}x{k})");
        }
        if (bias is not null)
        {
            long total = (long)m * n;
            Launch(Ops, "add_bias", Blocks(total), Threads, Out(output), ((CudaWeight)bias).Pointer, total, n);
        }
    }

    public void ApplyRope(DeviceTensor x, RopeArgs args) =>
        Launch(Ops, "rope", (uint)x.Rows, Threads, Out(x), _ropeCos!.Pointer, _ropeSin!.Pointer, args.Heads, args.HeadDim, args.StartPosition);

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

    public void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v)
    {
        var c = (CudaKvCache)cache;
        if (startPosition + k.Rows > c.Shape.Capacity)
        {
            throw new InvalidOperationException($"KV cache holds {c.Shape.Capacity} positions; asked to write up to {startPosition + k.Rows}");
        }
        nint offset = (nint)(c.LayerBytes * layer);
        Launch(Ops, "kv_append", (uint)k.Rows, Threads, In(k), In(v), c.Keys.Pointer + offset, c.Values.Pointer + offset, c.Shape.KvHeads, c.Shape.HeadDim, c.Shape.Capacity, startPosition);
    }

    public void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        var c = (CudaKvCache)cache;
        nint keys = c.Keys.Pointer + (nint)(c.LayerBytes * args.Layer), values = c.Values.Pointer + (nint)(c.LayerBytes * args.Layer);
        var module = AttentionModule(args.HeadDim, args.Heads / args.KvHeads);
        if (!TensorCoreHeadDim(args.HeadDim))
        {
            int warps = args.Tokens * args.Heads;
            Launch(module, "attention_dense", (uint)((warps + 3) / 4), 128, In(q), keys, values, Out(output), args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.StartPosition, args.Scale);
            return;
        }
        TensorCoreAttention(args, module, 1, q, keys, values, c.Shape.Capacity, 0, output);
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
        TensorCoreAttention(args with { Tokens = 1 }, AttentionModule(args.HeadDim, args.Heads / args.KvHeads), args.Tokens, q, c.Keys.Pointer, c.Values.Pointer, c.Shape.Capacity, c.LayerBytes / 2, output);
    }

    /// <summary>Head dims <c>attention_mma</c> is compiled for; others run the reference <c>attention_dense</c>.</summary>
    private static bool TensorCoreHeadDim(int headDim) => headDim % 32 == 0 && headDim <= 128;

    /// <summary>
    /// <c>attention_mma</c> over <paramref name="sequences"/> sequences of <c>args.Tokens</c> queries each (sequence s's
    /// cache <paramref name="sequenceStride"/> elements after s − 1's), then <c>attention_combine</c> if the keys were split.
    /// </summary>
    private void TensorCoreAttention(AttentionArgs args, CudaModule module, int sequences, DeviceTensor q, nint keys, nint values, int capacity, long sequenceStride, DeviceTensor output)
    {
        int group = args.Heads / args.KvHeads;
        var plan = AttentionLaunch.Choose(args.Tokens, group, args.KvHeads, sequences, args.StartPosition + args.Tokens, args.HeadDim, _device.Multiprocessors, _device.SharedMemoryPerMultiprocessor);
        long queryRows = (long)sequences * args.Tokens * args.Heads;
        nint partialOut = 0, partialMl = 0;
        if (plan.Splits > 1)
        {
            partialOut = Scratch(ref _partialOut, queryRows * plan.Splits * args.HeadDim * sizeof(float)).Pointer;
            partialMl = Scratch(ref _partialMl, queryRows * plan.Splits * 2 * sizeof(float)).Pointer;
        }
        Launch(module, "attention_mma", new Dim3((uint)plan.Splits, (uint)plan.RowTiles, (uint)(sequences * args.KvHeads)), (uint)plan.Threads,
            In(q), keys, values, Out(output), partialOut, partialMl, args.Tokens, args.Heads, args.KvHeads, capacity, args.StartPosition, args.Scale, plan.KeysPerSplit, sequenceStride);
        if (plan.Splits > 1)
        {
            Launch(module, "attention_combine", new Dim3((uint)queryRows, 1, 1), (uint)args.HeadDim, partialOut, partialMl, Out(output), plan.Splits);
        }
    }

    public AttentionPlan AnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, DeviceTensor output) => throw NotYet("Kascade anchors");

    public void ReuseAttention(AttentionArgs args, AttentionPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output) => throw NotYet("Kascade reuse");

    public void OracleTopKAttention(AttentionArgs args, double topKPercent, DeviceTensor q, KvCache cache, DeviceTensor output) => throw NotYet("oracle-topk");

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
        nint keys = c.Keys.Pointer + (nint)(c.LayerBytes * args.Layer), values = c.Values.Pointer + (nint)(c.LayerBytes * args.Layer);
        Launch(AttentionModule(args.HeadDim, args.Heads / args.KvHeads), "attention_gathered", (uint)((items + 3) / 4), 128,
            In(q), keys, values, Out(output), offsetBuffer.Pointer, positionBuffer.Pointer, args.Tokens, args.Heads, args.KvHeads, c.Shape.Capacity, args.Scale);
    }

    public void ReadKeys(KvCache cache, int layer, int count, Span<float> destination)
    {
        var c = (CudaKvCache)cache;
        int d = c.Shape.HeadDim;
        var bits = new ushort[count * d];
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        for (int h = 0; h < c.Shape.KvHeads; h++)
        {
            fixed (ushort* p = bits)
            {
                nint source = c.Keys.Pointer + (nint)(c.LayerBytes * layer + (long)h * c.Shape.Capacity * d * sizeof(ushort));
                CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, source, (nuint)(bits.Length * sizeof(ushort))), "cuMemcpyDtoH");
            }
            DTypes.Bf16ToSingle(bits, destination.Slice(h * count * d, count * d));
        }
    }

    public void Read(DeviceTensor x, Span<float> destination)
    {
        var t = (CudaTensor)x;
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        fixed (float* p = destination)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, t.Pointer, (nuint)(t.Elements * sizeof(float))), "cuMemcpyDtoH");
        }
    }

    /// <summary>A timer on this backend's stream (benchmarks).</summary>
    public GpuTimer CreateTimer() => new(_stream.Value);

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

    private static KascadeException NotYet(string what) =>
        new($"{what} is not implemented on the CUDA backend yet; use --device cpu for sparse attention");

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
        // Host→device copies of pageable memory are synchronous; finish queued kernels that may read the target first.
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoD_v2(destination, source, (nuint)bytes), "cuMemcpyHtoD");
    }

    /// <summary>A reusable device buffer of at least <paramref name="bytes"/>, grown (never per token once warm).</summary>
    private DeviceMemory Scratch(ref DeviceMemory? buffer, long bytes)
    {
        if (buffer is null || buffer.Bytes < bytes)
        {
            CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
            buffer?.Dispose();
            buffer = DeviceMemory.Allocate(Math.Max(bytes, 1 << 16));
        }
        return buffer;
    }

    private static uint Blocks(long n) => (uint)Math.Clamp((n + Threads - 1) / Threads, 1, 65535);

    private static nint In(DeviceTensor t) => ((CudaTensor)t).Pointer;

    private static nint Out(DeviceTensor t) => ((CudaTensor)t).Pointer;

    private CudaModule Ops => _ops ??= Module("ops.cu", []);

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

    private void Launch(CudaModule module, string name, uint grid, uint block, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module, name, new Dim3(grid, 1, 1), block, arguments);

    /// <summary>
    /// Launches kernel <paramref name="name"/> of <paramref name="module"/>; each argument is an 8-byte slot passed by
    /// address. The arguments live on the stack, so a launch allocates nothing.
    /// </summary>
    private void Launch(CudaModule module, string name, Dim3 grid, uint block, params ReadOnlySpan<KernelArg> arguments)
    {
        nint function = module.Function(name);
        var slots = stackalloc long[arguments.Length];
        var pointers = stackalloc void*[arguments.Length];
        for (int i = 0; i < arguments.Length; i++)
        {
            slots[i] = arguments[i].Bits;
            pointers[i] = &slots[i];
        }
        CudaCheck.ThrowIfFailed(Driver.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block, 1, 1, 0, _stream.Value, pointers, null), $"cuLaunchKernel({name})");
    }

    /// <summary>The module of <paramref name="source"/> specialised by <paramref name="defines"/>, compiled (or read from the disk cache) once.</summary>
    private CudaModule Module(string source, Dictionary<string, string> defines)
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
        _ids?.Dispose();
        _partialOut?.Dispose();
        _partialMl?.Dispose();
        _selectionOffsets?.Dispose();
        _selectionPositions?.Dispose();
        _cublas.Dispose();
        _stream.Dispose();
        _device.Dispose();
    }
}
