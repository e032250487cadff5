using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// The CUDA backend: fp32 activations, bf16 weights and KV cache, GEMMs through cuBLASLt (bf16 in, fp32 accumulate
/// and out), our kernels for the rest, compiled by NVRTC for the device on first use.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    private const int Threads = 256;

    /// <summary>Threads of a <c>sample_tokens</c> block (its SAMPLE_THREADS).</summary>
    private const uint SampleThreads = 1024;

    private readonly CudaDevice _device;
    private readonly StreamHandle _stream;
    private readonly LtGemm _gemm;
    private readonly KernelCompiler _compiler;
    private DeviceMemory? _ropeCos, _ropeSin;
    private DeviceMemory? _bf16Scratch;

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
    /// Whether a Hopper GPU runs Hopper's own kernels (warpgroup-MMA prefill, anchor scores and sparse prefill, the
    /// cluster Top-k, programmatic dependent launch). Off, the backend runs what it runs on the GPUs before Hopper, so
    /// that those kernels can be checked on an H100: <c>KASCADE_HOPPER_KERNELS=0 kascade test-backend</c> (4517 of 4517 on
    /// the H100, session 13). Read once from the environment: switched inside one process after the Hopper grids had run,
    /// session 12's test-backend stopped with an illegal address that a fresh process does not reproduce.
    /// </summary>
    public bool HopperKernels { get; } = Environment.GetEnvironmentVariable("KASCADE_HOPPER_KERNELS") != "0";

    private bool Hopper => _device.Hopper && HopperKernels;

    /// <summary>
    /// Every registered method, on the device's select/attend ops: the Kascade variants and the oracle
    /// (<c>selection.cu</c>), the baselines' key selectors (<c>selectors.cu</c>).
    /// </summary>
    public static bool RunsMethod(AttentionMethod method) => AttentionMethods.All.Any(m => m.Method == method);

    public bool Runs(AttentionMethod method) => RunsMethod(method);

    public IReadOnlyList<string> Supports(ModelConfig config)
    {
        var reasons = new List<string>();
        if (AttentionHeadDims.Family(config.HeadDim) == AttentionFamily.Unsupported)
        {
            reasons.Add($"head_dim {config.HeadDim} is not supported by the attention kernels (a multiple of 32 up to {AttentionHeadDims.Max}; tensor cores up to {AttentionHeadDims.MaxTensorCores})");
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

    public void Embed(StepInputs step, Weight table, DeviceTensor output)
    {
        var w = (CudaWeight)table;
        Launch(Ops, "embed_bf16", (uint)output.Rows, Threads, w.Pointer, ((CudaStepInputs)step).Ids, Out(output), output.Cols);
    }

    public void RmsNorm(DeviceTensor x, Weight weight, int width, float eps, DeviceTensor output)
    {
        int groups = (int)((long)x.Rows * x.Cols / width);
        Launch(Ops, "rmsnorm", new Dim3((uint)groups, 1, 1), width >= 256 ? 256u : 64u, dependent: true, In(x), ((CudaWeight)weight).Pointer, Out(output), width, eps);
    }

    public void RopeAppendKv(AttentionArgs args, DeviceTensor q, DeviceTensor k, DeviceTensor v, KvCache cache)
    {
        var c = (CudaKvCache)cache;
        c.Shape.CheckWrite(args.StartPosition, k.Rows);
        uint pairs = (uint)(args.HeadDim / 2 + 31) / 32 * 32;
        Launch(Ops, "rope_append", new Dim3((uint)q.Rows, (uint)(args.Heads + args.KvHeads), 1), Math.Min(pairs, (uint)Threads), dependent: true, Out(q), Out(k), In(v), _ropeCos!.Pointer, _ropeSin!.Pointer,
            c.LayerKeys(args.Layer), c.LayerValues(args.Layer), args.Heads, args.KvHeads, args.HeadDim, c.Shape.Capacity, args.StartPosition, StartOnDevice(args.Step));
    }

    public void Add(DeviceTensor x, DeviceTensor y)
    {
        long n = ((CudaTensor)x).Elements;
        Launch(Ops, "add", Blocks(n), Threads, Out(x), In(y), n);
    }

    public void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v, StepInputs? step = null)
    {
        var c = (CudaKvCache)cache;
        c.Shape.CheckWrite(startPosition, k.Rows);
        Launch(Ops, "kv_append", (uint)k.Rows, Threads, In(k), In(v), c.LayerKeys(layer), c.LayerValues(layer), c.Shape.KvHeads, c.Shape.HeadDim, c.Shape.Capacity, startPosition, StartOnDevice(step));
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
        DisposeAttentionBuffers();
        DisposeSelectionBuffers();
        DisposeSparseBuffers();
        DisposeSelectorBuffers();
        DisposeDecodeSelectionBuffers();
        _gemm.Dispose();
        _stream.Dispose();
        _device.Dispose();
    }
}
