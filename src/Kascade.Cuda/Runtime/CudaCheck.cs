using System.Runtime.InteropServices;
using Kascade.Core;
using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>A failed CUDA, NVRTC or cuBLASLt call, named.</summary>
public sealed class CudaException(string message) : KascadeException(message);

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
        string hint = result == CuResult.OutOfMemory ? " (out of GPU memory: use a shorter context, a smaller batch or a smaller model)" : "";
        throw new CudaException($"{call} failed: {detail} ({(int)result}){hint}");
    }

    public static void ThrowIfFailed(NvrtcResult result, string call)
    {
        if (result != NvrtcResult.Success)
        {
            throw new CudaException($"{call} failed: {Marshal.PtrToStringUTF8(Nvrtc.nvrtcGetErrorString(result))} ({(int)result})");
        }
    }

    public static void ThrowIfFailed(CublasStatus status, string call)
    {
        if (status != CublasStatus.Success)
        {
            throw new CudaException($"{call} failed: {status} ({(int)status})");
        }
    }
}
