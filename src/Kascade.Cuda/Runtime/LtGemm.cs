using Kascade.Core;
using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>
/// The linear layers' GEMM through cuBLASLt: row-major out[m, n] (fp32) = x[m, k] (bf16) · W[n, k]ᵀ (bf16), fp32
/// accumulation. Planned once per shape, FlashInfer's plan/run split: the matrix layouts and the algorithm cuBLASLt's
/// heuristic picks are cached by (m, n, k), and the workspace is allocated once, so a run allocates nothing and can be
/// captured into a CUDA graph.
/// </summary>
internal sealed unsafe class LtGemm : IDisposable
{
    /// <summary>The workspace NVIDIA recommends for Hopper (cuBLAS documentation, cublasLtMatmul); enough before it.</summary>
    private const long WorkspaceBytes = 32L << 20;

    private readonly CublasLtObject _context;
    private readonly CublasLtObject _operation;
    private readonly CublasLtObject _preference;
    private readonly DeviceMemory _workspace;
    private readonly Dictionary<(int M, int N, int K), Plan> _plans = [];

    /// <summary>Column-major layouts of one shape (W as k × n, x as k × m, out as n × m) and the chosen algorithm.</summary>
    private sealed class Plan(CublasLtObject w, CublasLtObject x, CublasLtObject output, CublasLtAlgo algo) : IDisposable
    {
        public CublasLtObject W { get; } = w;

        public CublasLtObject X { get; } = x;

        public CublasLtObject Out { get; } = output;

        public CublasLtAlgo Algo { get; } = algo;

        public void Dispose()
        {
            W.Dispose();
            X.Dispose();
            Out.Dispose();
        }
    }

    public LtGemm()
    {
        _context = CublasLtObject.Created(CublasLt.cublasLtCreate(out nint context), context, CublasLt.cublasLtDestroy, "cublasLtCreate");
        _operation = CublasLtObject.Created(CublasLt.cublasLtMatmulDescCreate(out nint operation, CublasLt.Compute32F, CudaDataType.R32F), operation, CublasLt.cublasLtMatmulDescDestroy, "cublasLtMatmulDescCreate");
        // Row-major out[m, n] = x[m, k] · W[n, k]ᵀ is column-major outᵀ[n, m] = op_T(W as k × n) · (x as k × m).
        int transposed = CublasLt.OpT, plain = CublasLt.OpN;
        CudaCheck.ThrowIfFailed(CublasLt.cublasLtMatmulDescSetAttribute(operation, CublasLt.DescTransA, &transposed, sizeof(int)), "cublasLtMatmulDescSetAttribute(TRANSA)");
        CudaCheck.ThrowIfFailed(CublasLt.cublasLtMatmulDescSetAttribute(operation, CublasLt.DescTransB, &plain, sizeof(int)), "cublasLtMatmulDescSetAttribute(TRANSB)");
        _preference = CublasLtObject.Created(CublasLt.cublasLtMatmulPreferenceCreate(out nint preference), preference, CublasLt.cublasLtMatmulPreferenceDestroy, "cublasLtMatmulPreferenceCreate");
        ulong workspace = WorkspaceBytes;
        CudaCheck.ThrowIfFailed(CublasLt.cublasLtMatmulPreferenceSetAttribute(preference, CublasLt.PreferenceMaxWorkspaceBytes, &workspace, sizeof(ulong)), "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
        _workspace = DeviceMemory.Allocate(WorkspaceBytes);
    }

    /// <param name="w">bf16 [n, k], row-major.</param>
    /// <param name="x">bf16 [m, k], row-major.</param>
    /// <param name="output">fp32 [m, n], row-major.</param>
    /// <param name="accumulate">output += x · Wᵀ (β = 1) instead of output = x · Wᵀ.</param>
    /// <param name="name">The weight's name, for errors.</param>
    public void Run(nint w, nint x, nint output, int m, int n, int k, bool accumulate, nint stream, string name)
    {
        var plan = PlanFor(m, n, k, name);
        float alpha = 1f, beta = accumulate ? 1f : 0f;
        var algo = plan.Algo;
        CudaCheck.ThrowIfFailed(
            CublasLt.cublasLtMatmul(_context.Value, _operation.Value, &alpha, w, plan.W.Value, x, plan.X.Value, &beta, output, plan.Out.Value, output, plan.Out.Value, &algo, _workspace.Pointer, (nuint)WorkspaceBytes, stream),
            $"cublasLtMatmul({name}: {m}x{n}x{k})");
    }

    private Plan PlanFor(int m, int n, int k, string name)
    {
        if (_plans.TryGetValue((m, n, k), out var plan))
        {
            return plan;
        }
        var w = Layout(CudaDataType.R16BF, k, n);
        var x = Layout(CudaDataType.R16BF, k, m);
        var output = Layout(CudaDataType.R32F, n, m);
        CublasLtHeuristicResult best;
        CudaCheck.ThrowIfFailed(
            CublasLt.cublasLtMatmulAlgoGetHeuristic(_context.Value, _operation.Value, w.Value, x.Value, output.Value, output.Value, _preference.Value, 1, &best, out int found),
            $"cublasLtMatmulAlgoGetHeuristic({name}: {m}x{n}x{k})");
        if (found == 0)
        {
            w.Dispose();
            x.Dispose();
            output.Dispose();
            throw new KascadeException($"cuBLASLt has no algorithm for {name} ({m}x{n}x{k}, bf16 in, fp32 out) on this GPU");
        }
        plan = new Plan(w, x, output, best.Algo);
        _plans[(m, n, k)] = plan;
        return plan;
    }

    /// <summary>A column-major layout of <paramref name="rows"/> × <paramref name="cols"/>, rows contiguous.</summary>
    private static CublasLtObject Layout(CudaDataType type, int rows, int cols) =>
        CublasLtObject.Created(CublasLt.cublasLtMatrixLayoutCreate(out nint layout, type, (ulong)rows, (ulong)cols, rows), layout, CublasLt.cublasLtMatrixLayoutDestroy, "cublasLtMatrixLayoutCreate");

    public void Dispose()
    {
        foreach (var plan in _plans.Values)
        {
            plan.Dispose();
        }
        _plans.Clear();
        _preference.Dispose();
        _operation.Dispose();
        _context.Dispose();
        _workspace.Dispose();
    }
}
