using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>One weight of a <c>gemv</c> launch (<c>gemv.cu</c>'s <c>GemvSegment</c>, field for field).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GemvSegment
{
    public nint W;          // bf16 [rows, k]
    public nint Bias;       // fp32 [rows], or 0
    public nint Y;          // fp32 [m, rows]
    public int Rows, First; // the launch's output columns [First, First + Rows)
}

[InlineArray(CudaBackend.GemvSegments)]
internal struct GemvSegmentArray
{
    private GemvSegment _first;
}

/// <summary>The arguments of <c>gemv</c> and <c>gemv_swiglu</c> (their <c>GemvParams</c>, field for field).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GemvParams
{
    public nint X;          // fp32 [m, k]
    public int M, K, Columns, Segments, Accumulate;
    public GemvSegmentArray Segment;
}

/// <summary>
/// The linear layers: a weight-streaming GEMV (<c>gemv.cu</c>) for the few rows of a decode step, where reading the
/// weights once is the whole cost, and cuBLASLt GEMMs (<see cref="LtGemm"/>) for prefill chunks.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Rows of x up to which the GEMV replaces the cuBLASLt GEMM (<c>gemv.cu</c>'s GEMV_ROWS).</summary>
    private const int GemvMaxRows = 8;

    /// <summary>Weights one GEMV launch covers (GEMV_SEGMENTS).</summary>
    internal const int GemvSegments = 4;

    /// <summary>Output columns of a GEMV block (GEMV_COLUMNS), whose GEMV_THREADS threads split k.</summary>
    private const int GemvColumns = 2;

    private const uint GemvThreads = 256;

    private CudaModule? _gemv;

    /// <summary>Blocks of each GEMV kernel that stay resident on the device (<see cref="GemvGrid"/>).</summary>
    private readonly Dictionary<string, int> _gemvResident = [];

    private CudaModule GemvModule => _gemv ??= Module("gemv.cu", new Dictionary<string, string>());

    public void MatMul(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output, bool accumulate = false)
    {
        var w = CheckProduct(x, weight, output);
        if (RunsGemv(x))
        {
            var p = GemvOver(x, accumulate);
            AddSegment(ref p, w, bias, output);
            LaunchGemv("gemv", p);
            return;
        }
        RunGemm(ToBf16(x), x.Rows, w, output, accumulate);
        AddBias(bias, output);
    }

    public void MatMul(DeviceTensor x, ReadOnlySpan<Projection> projections)
    {
        if (projections.IsEmpty)
        {
            return;
        }
        foreach (var p in projections)
        {
            CheckProduct(x, p.Weight, p.Output);
        }
        if (RunsGemv(x))
        {
            for (int start = 0; start < projections.Length; start += GemvSegments)
            {
                var group = projections.Slice(start, Math.Min(GemvSegments, projections.Length - start));
                var p = GemvOver(x, accumulate: false);
                foreach (var projection in group)
                {
                    AddSegment(ref p, (CudaWeight)projection.Weight, projection.Bias, projection.Output);
                }
                LaunchGemv("gemv", p);
            }
            return;
        }
        // One bf16 copy of x serves every GEMM.
        nint xb = ToBf16(x);
        foreach (var p in projections)
        {
            RunGemm(xb, x.Rows, (CudaWeight)p.Weight, p.Output, accumulate: false);
            AddBias(p.Bias, p.Output);
        }
    }

    public void MatMulSwiGlu(DeviceTensor x, Weight gate, Weight up, DeviceTensor output, DeviceTensor workspace)
    {
        var g = CheckProduct(x, gate, output);
        var u = CheckProduct(x, up, workspace);
        if (g.Rows != u.Rows)
        {
            throw new ArgumentException($"gate {g.Name} has {g.Rows} rows and up {u.Name} {u.Rows}");
        }
        if (RunsGemv(x))
        {
            // A block reads rows j of gate and of up and writes silu(g)·u: one launch, no [m, n] product of up.
            var p = GemvOver(x, accumulate: false);
            AddSegment(ref p, g, null, output);
            AddSegment(ref p, u, null, workspace);
            p.Columns = g.Rows; // the gate's rows; each column reads that row of up too
            LaunchGemv("gemv_swiglu", p);
            return;
        }
        nint xb = ToBf16(x);
        RunGemm(xb, x.Rows, g, output, accumulate: false);
        RunGemm(xb, x.Rows, u, workspace, accumulate: false);
        long n = ((CudaTensor)output).Elements;
        Launch(Ops, "swiglu", Blocks(n), Threads, Out(output), In(workspace), n);
    }

    private static CudaWeight CheckProduct(DeviceTensor x, Weight weight, DeviceTensor output)
    {
        var w = (CudaWeight)weight;
        int m = x.Rows, k = x.Cols, n = w.Rows;
        if (k != w.Cols || output.Cols != n || output.Rows != m)
        {
            throw new ArgumentException($"matmul shapes: x [{m}, {k}] · {w.Name} [{n}, {w.Cols}]ᵀ → [{output.Rows}, {output.Cols}]");
        }
        return w;
    }

    /// <summary>A decode step's few rows with 16-byte rows of x and w: the GEMV, which reads each weight once at bandwidth.</summary>
    private static bool RunsGemv(DeviceTensor x) => x.Rows <= GemvMaxRows && x.Cols % 8 == 0;

    private static GemvParams GemvOver(DeviceTensor x, bool accumulate) =>
        new() { X = In(x), M = x.Rows, K = x.Cols, Accumulate = accumulate ? 1 : 0 };

    /// <summary>Appends a weight whose rows follow the launch's output columns so far (<see cref="GemvParams.Columns"/>).</summary>
    private static void AddSegment(ref GemvParams p, CudaWeight w, Weight? bias, DeviceTensor output)
    {
        p.Segment[p.Segments++] = new GemvSegment { W = w.Pointer, Bias = bias is null ? 0 : ((CudaWeight)bias).Pointer, Y = Out(output), Rows = w.Rows, First = p.Columns };
        p.Columns += w.Rows;
    }

    /// <summary>
    /// Launches GEMV kernel <paramref name="kernel"/> (<c>gemv</c> or <c>gemv_swiglu</c>) in its one-row form where x
    /// has one row, as a dependent kernel: it loads its first weights while the previous kernel finishes and waits for
    /// that kernel before it reads x (programmatic dependent launch on Hopper; an ordinary launch elsewhere).
    /// </summary>
    private void LaunchGemv(string kernel, GemvParams p)
    {
        string name = p.M == 1 ? kernel + "_1" : kernel + "_8";
        nint function = GemvModule.Function(name);
        LaunchWith(function, name, new Dim3((uint)GemvGrid(function, name, p.Columns), 1, 1), GemvThreads, 0, p, dependent: true);
    }

    /// <summary>
    /// The GEMV's grid: a block per group of <see cref="GemvColumns"/> output columns, at most as many as stay resident
    /// on the device, each resident block then looping over groups (<c>gemv.cu</c>'s <c>gemv_blocks</c>).
    /// </summary>
    private int GemvGrid(nint function, string name, int columns)
    {
        if (!_gemvResident.TryGetValue(name, out int resident))
        {
            CudaCheck.ThrowIfFailed(Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(out int perMultiprocessor, function, (int)GemvThreads, 0), $"cuOccupancyMaxActiveBlocksPerMultiprocessor({name})");
            resident = Math.Max(1, perMultiprocessor) * _device.Multiprocessors;
            _gemvResident[name] = resident;
        }
        return Math.Min((columns + GemvColumns - 1) / GemvColumns, resident);
    }

    /// <summary>x as bf16 in the scratch buffer, the GEMMs' input.</summary>
    private nint ToBf16(DeviceTensor x)
    {
        long count = (long)x.Rows * x.Cols;
        var xb = Scratch(ref _bf16Scratch, count * 2);
        Launch(Ops, "to_bf16", Blocks(count), Threads, In(x), xb.Pointer, count);
        return xb.Pointer;
    }

    private void RunGemm(nint xb, int m, CudaWeight w, DeviceTensor output, bool accumulate) =>
        _gemm.Run(w.Pointer, xb, Out(output), m, w.Rows, w.Cols, accumulate, _stream.Value, w.Name);

    private void AddBias(Weight? bias, DeviceTensor output)
    {
        if (bias is not null)
        {
            long total = (long)output.Rows * output.Cols;
            Launch(Ops, "add_bias", Blocks(total), Threads, Out(output), ((CudaWeight)bias).Pointer, total, output.Cols);
        }
    }
}
