using System.Runtime.InteropServices;

namespace Kascade.Cuda.Interop;

public enum CublasStatus
{
    Success = 0,
    NotInitialized = 1,
    AllocFailed = 3,
    InvalidValue = 7,
    ArchMismatch = 8,
    ExecutionFailed = 13,
    NotSupported = 15,
}

/// <summary><c>cudaDataType</c> values.</summary>
public enum CudaDataType
{
    R32F = 0,
    R16F = 2,
    R16BF = 14,
}

/// <summary><c>cublasLtMatmulAlgo_t</c>: an opaque algorithm configuration chosen by the heuristic.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CublasLtAlgo
{
    public fixed ulong Data[8];
}

/// <summary><c>cublasLtMatmulHeuristicResult_t</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CublasLtHeuristicResult
{
    public CublasLtAlgo Algo;
    public nuint WorkspaceSize;
    public CublasStatus State;
    public float WavesCount;
    public fixed int Reserved[4];
}

/// <summary>cuBLASLt (<c>libcublasLt.so.13</c> or <c>.12</c>): the GEMMs of the linear layers.</summary>
internal static unsafe partial class CublasLt
{
    public const int OpN = 0;
    public const int OpT = 1;

    /// <summary><c>CUBLAS_COMPUTE_32F</c>: fp32 accumulation.</summary>
    public const int Compute32F = 68;

    /// <summary><c>CUBLASLT_MATMUL_DESC_TRANSA</c> / <c>TRANSB</c> (int32 <c>cublasOperation_t</c>).</summary>
    public const int DescTransA = 3;
    public const int DescTransB = 4;

    /// <summary><c>CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES</c> (uint64).</summary>
    public const int PreferenceMaxWorkspaceBytes = 1;

    static CublasLt() => NativeLibraries.Register();

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtCreate(out nint handle);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtDestroy(nint handle);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulDescCreate(out nint desc, int computeType, CudaDataType scaleType);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulDescDestroy(nint desc);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulDescSetAttribute(nint desc, int attribute, void* value, nuint size);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatrixLayoutCreate(out nint layout, CudaDataType type, ulong rows, ulong cols, long leadingDimension);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatrixLayoutDestroy(nint layout);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulPreferenceCreate(out nint preference);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulPreferenceDestroy(nint preference);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulPreferenceSetAttribute(nint preference, int attribute, void* value, nuint size);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmulAlgoGetHeuristic(nint handle, nint operation, nint a, nint b, nint c, nint d, nint preference, int requested, CublasLtHeuristicResult* results, out int returned);

    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial CublasStatus cublasLtMatmul(nint handle, nint operation, float* alpha, nint a, nint aLayout, nint b, nint bLayout, float* beta, nint c, nint cLayout, nint d, nint dLayout, CublasLtAlgo* algo, nint workspace, nuint workspaceBytes, nint stream);
}
