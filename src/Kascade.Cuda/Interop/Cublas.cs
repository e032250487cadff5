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

/// <summary>cuBLAS (<c>libcublas.so.13</c> or <c>.12</c>): the GEMMs of the linear layers.</summary>
internal static partial class Cublas
{
    public const int OpN = 0;
    public const int OpT = 1;

    /// <summary><c>CUBLAS_COMPUTE_32F</c>: fp32 accumulation.</summary>
    public const int Compute32F = 68;

    /// <summary><c>CUBLAS_GEMM_DEFAULT_TENSOR_OP</c>.</summary>
    public const int GemmDefaultTensorOp = 99;

    static Cublas() => NativeLibraries.Register();

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial CublasStatus cublasCreate_v2(out nint handle);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial CublasStatus cublasDestroy_v2(nint handle);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial CublasStatus cublasSetStream_v2(nint handle, nint stream);

    [LibraryImport(NativeLibraries.Cublas)]
    public static unsafe partial CublasStatus cublasGemmEx(
        nint handle, int transA, int transB, int m, int n, int k,
        float* alpha, nint a, CudaDataType aType, int lda, nint b, CudaDataType bType, int ldb,
        float* beta, nint c, CudaDataType cType, int ldc, int computeType, int algorithm);
}
