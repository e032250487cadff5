using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>One GPU with its primary context made current: name, compute capability and the limits kernels are sized by.</summary>
public sealed unsafe class CudaDevice : IDisposable
{
    private readonly int _device;

    private CudaDevice(int device)
    {
        _device = device;
        CudaCheck.ThrowIfFailed(Driver.cuDevicePrimaryCtxRetain(out nint context, device), "cuDevicePrimaryCtxRetain");
        CudaCheck.ThrowIfFailed(Driver.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        var name = stackalloc byte[256];
        CudaCheck.ThrowIfFailed(Driver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        Name = System.Runtime.InteropServices.Marshal.PtrToStringUTF8((nint)name)!;
        Major = Attribute(CuDeviceAttribute.ComputeCapabilityMajor);
        Minor = Attribute(CuDeviceAttribute.ComputeCapabilityMinor);
        Multiprocessors = Attribute(CuDeviceAttribute.MultiprocessorCount);
        MaxSharedMemoryOptin = Attribute(CuDeviceAttribute.MaxSharedMemoryPerBlockOptin);
        SharedMemoryPerMultiprocessor = Attribute(CuDeviceAttribute.MaxSharedMemoryPerMultiprocessor);
    }

    public string Name { get; }

    public int Major { get; }

    public int Minor { get; }

    public int Multiprocessors { get; }

    public int MaxSharedMemoryOptin { get; }

    public int SharedMemoryPerMultiprocessor { get; }

    /// <summary>A Hopper GPU (compute capability 9.0), compiled for <c>sm_90a</c>: wgmma, TMA, programmatic dependent launch.</summary>
    public bool Hopper => Major == 9 && Minor == 0;

    /// <summary>NVRTC target: <c>sm_90a</c> on Hopper (so wgmma/TMA may be used), else <c>sm_XY</c>.</summary>
    public string Architecture => Hopper ? "sm_90a" : $"sm_{Major}{Minor}";

    /// <summary>Opens GPU <paramref name="ordinal"/>; a clear error when there is no driver or no device.</summary>
    public static CudaDevice Open(int ordinal = 0)
    {
        if (Probe() is { } reason)
        {
            throw new CudaException(reason);
        }
        CudaCheck.ThrowIfFailed(Driver.cuDeviceGet(out int device, ordinal), $"cuDeviceGet({ordinal})");
        return new CudaDevice(device);
    }

    /// <summary>Null when a CUDA device can be used; otherwise why not (tests skip with it).</summary>
    public static string? Probe()
    {
        try
        {
            var init = Driver.cuInit(0);
            if (init != CuResult.Success)
            {
                return $"no usable CUDA driver (cuInit: {init})";
            }
            CudaCheck.ThrowIfFailed(Driver.cuDeviceGetCount(out int count), "cuDeviceGetCount");
            return count > 0 ? null : "no CUDA device";
        }
        catch (DllNotFoundException)
        {
            return "no CUDA driver (libcuda.so.1 not found)";
        }
    }

    public (long Free, long Total) MemoryInfo()
    {
        CudaCheck.ThrowIfFailed(Driver.cuMemGetInfo_v2(out nuint free, out nuint total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    private int Attribute(CuDeviceAttribute attribute)
    {
        CudaCheck.ThrowIfFailed(Driver.cuDeviceGetAttribute(out int v, attribute, _device), $"cuDeviceGetAttribute({attribute})");
        return v;
    }

    public void Dispose() => Driver.cuDevicePrimaryCtxRelease_v2(_device);
}
