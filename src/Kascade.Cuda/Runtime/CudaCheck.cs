using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>
/// A failed CUDA, NVRTC or cuBLASLt call, named. <see cref="IsBug"/> is false for what the user's machine or request
/// causes (no GPU, an old driver, memory exhausted) and true for what only a bug in kascade causes (a faulting kernel,
/// a kernel that does not compile, an invalid argument): front ends report the latter as internal errors.
/// </summary>
public sealed class CudaException(string message, bool isBug = false) : KascadeException(message)
{
    public bool IsBug { get; } = isBug;
}

/// <summary>The one place driver, NVRTC and cuBLASLt results become exceptions naming the failing call.</summary>
internal static unsafe class CudaCheck
{
    public static void ThrowIfFailed(CuResult result, string call)
    {
        if (result == CuResult.Success)
        {
            return;
        }
        byte* text = null;
        string detail = Driver.cuGetErrorString(result, &text) == CuResult.Success && text != null ? Marshal.PtrToStringUTF8((nint)text)! : result.ToString();
        string hint = result switch
        {
            CuResult.OutOfMemory => " (out of GPU memory: use a shorter context, a smaller batch or a smaller model)",
            CuResult.InvalidDevice => " (no GPU of that number: --device cuda:N counts from 0)",
            CuResult.InsufficientDriver or CuResult.UnsupportedPtxVersion => " (the NVIDIA driver is older than the CUDA libraries: update the driver)",
            _ => "",
        };
        throw new CudaException($"{call} failed: {detail} ({(int)result}){hint}", isBug: !IsEnvironment(result));
    }

    public static void ThrowIfFailed(NvrtcResult result, string call)
    {
        if (result != NvrtcResult.Success)
        {
            throw new CudaException($"{call} failed: {Marshal.PtrToStringUTF8(Nvrtc.nvrtcGetErrorString(result))} ({(int)result})", isBug: result != NvrtcResult.OutOfMemory);
        }
    }

    public static void ThrowIfFailed(CublasStatus status, string call)
    {
        if (status != CublasStatus.Success)
        {
            throw new CudaException($"{call} failed: {status} ({(int)status})", isBug: status is not (CublasStatus.AllocFailed or CublasStatus.ArchMismatch or CublasStatus.NotInitialized));
        }
    }

    /// <summary>Results the machine or the request causes: no or the wrong GPU, an old driver, memory exhausted.</summary>
    private static bool IsEnvironment(CuResult result) => result is CuResult.OutOfMemory or CuResult.NotInitialized or CuResult.InsufficientDriver
        or CuResult.NoDevice or CuResult.InvalidDevice or CuResult.NoBinaryForGpu or CuResult.UnsupportedPtxVersion;
}
