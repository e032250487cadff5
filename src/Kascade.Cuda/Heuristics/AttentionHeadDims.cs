namespace Kascade.Cuda.Heuristics;

/// <summary>The attention kernels that run a head dim (<see cref="AttentionHeadDims.Family"/>).</summary>
public enum AttentionFamily
{
    /// <summary>No attention kernel runs the head dim: <c>CudaBackend.Supports</c> refuses the model.</summary>
    Unsupported,

    /// <summary><c>attention_dense</c> (attention_simple.cu): one warp per (token, query head) on the CUDA cores.</summary>
    CudaCores,

    /// <summary><c>attention_decode</c>, <c>attention_mma</c> and <c>attention_wgmma</c>, chosen by <see cref="AttentionKernel.For"/>.</summary>
    TensorCores,
}

/// <summary>
/// Which attention kernels run a head dim: the one rule that <c>CudaBackend.Supports</c> checks a model against and that
/// the attention ops dispatch on, so the two cannot disagree. A head dim is a multiple of 32: <c>attention_dense</c> gives
/// each of a warp's lanes HEAD_DIM / 32 dimensions.
/// </summary>
public static class AttentionHeadDims
{
    /// <summary>The largest head dim the tensor-core kernels are compiled for (attention_common.cuh).</summary>
    public const int MaxTensorCores = 128;

    /// <summary>The largest head dim the backend runs (on <c>attention_dense</c>).</summary>
    public const int Max = 256;

    public static AttentionFamily Family(int headDim) =>
        headDim % 32 != 0 || headDim > Max ? AttentionFamily.Unsupported
        : headDim <= MaxTensorCores ? AttentionFamily.TensorCores
        : AttentionFamily.CudaCores;

    /// <summary>Whether <c>attention_wgmma</c> runs the head dim: on Hopper (sm_90a), for the tensor-core head dims that are whole 64-dim swizzle regions (64, 128).</summary>
    public static bool RunsWgmma(int headDim, bool hopper) => hopper && headDim % 64 == 0 && Family(headDim) == AttentionFamily.TensorCores;
}
