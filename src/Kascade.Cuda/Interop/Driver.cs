using System.Runtime.InteropServices;

namespace Kascade.Cuda.Interop;

/// <summary>CUDA driver API result codes (the ones we name; others print their number and the driver's string).</summary>
public enum CuResult
{
    Success = 0,
    InvalidValue = 1,
    OutOfMemory = 2,
    NotInitialized = 3,
    InsufficientDriver = 35,
    NoDevice = 100,
    InvalidDevice = 101,
    InvalidImage = 200,
    InvalidContext = 201,
    NoBinaryForGpu = 209,
    UnsupportedPtxVersion = 222,
    NotFound = 500,
    LaunchOutOfResources = 701,
    LaunchFailed = 719,
}

/// <summary>Device attributes we read (values of <c>CUdevice_attribute</c>).</summary>
public enum CuDeviceAttribute
{
    MaxSharedMemoryPerBlock = 8,
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    L2CacheSize = 38,
    MaxSharedMemoryPerMultiprocessor = 81,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>Kernel attributes we set or read (values of <c>CUfunction_attribute</c>).</summary>
public enum CuFunctionAttribute
{
    SharedSizeBytes = 1,
    MaxDynamicSharedSizeBytes = 8,
}

/// <summary>A launch attribute (<c>CUlaunchAttribute</c>): an id and a 64-byte value union.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CuLaunchAttribute
{
    /// <summary><c>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION</c>.</summary>
    public const int ProgrammaticStreamSerialization = 6;

    public int Id;
    public int Padding;
    public fixed byte Value[64];
}

/// <summary>The launch of <c>cuLaunchKernelEx</c> (<c>CUlaunchConfig</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CuLaunchConfig
{
    public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedBytes;
    public nint Stream;
    public CuLaunchAttribute* Attributes;
    public uint AttributeCount;
}

/// <summary>How a stream capture treats other threads' unsafe calls (<c>CUstreamCaptureMode</c>).</summary>
internal enum CuStreamCaptureMode
{
    Global = 0,
    ThreadLocal = 1,
    Relaxed = 2,
}

/// <summary>The CUDA driver API calls the backend uses (<c>libcuda.so.1</c>).</summary>
internal static partial class Driver
{
    static Driver() => NativeLibraries.Register();

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuInit(uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuDeviceGetCount(out int count);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuDeviceGet(out int device, int ordinal);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuDeviceGetAttribute(out int value, CuDeviceAttribute attribute, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial CuResult cuDeviceGetName(byte* name, int length, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuDevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuDevicePrimaryCtxRelease_v2(int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuCtxSetCurrent(nint context);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuCtxSynchronize();

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemGetInfo_v2(out nuint free, out nuint total);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemAlloc_v2(out nint pointer, nuint bytes);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemFree_v2(nint pointer);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemcpyHtoD_v2(nint destination, nint source, nuint bytes);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemcpyDtoH_v2(nint destination, nint source, nuint bytes);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemsetD8_v2(nint destination, byte value, nuint count);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuModuleLoadData(out nint module, nint image);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuModuleUnload(nint module);

    [LibraryImport(NativeLibraries.Driver, StringMarshalling = StringMarshalling.Utf8)]
    public static partial CuResult cuModuleGetFunction(out nint function, nint module, string name);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial CuResult cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ, uint sharedBytes, nint stream, void** parameters, void** extra);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuFuncSetAttribute(nint function, CuFunctionAttribute attribute, int value);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuFuncGetAttribute(out int value, CuFunctionAttribute attribute, nint function);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuOccupancyMaxActiveBlocksPerMultiprocessor(out int blocks, nint function, int blockSize, nuint dynamicSharedBytes);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial CuResult cuLaunchKernelEx(CuLaunchConfig* config, nint function, void** parameters, void** extra);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuStreamCreate(out nint stream, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuStreamDestroy_v2(nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuStreamSynchronize(nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial CuResult cuGetErrorString(CuResult error, byte** text);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuEventCreate(out nint e, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuEventDestroy_v2(nint e);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuEventRecord(nint e, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuEventSynchronize(nint e);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuEventElapsedTime(out float milliseconds, nint start, nint end);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemcpyDtoDAsync_v2(nint destination, nint source, nuint bytes, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemsetD32Async(nint destination, uint value, nuint count, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemHostAlloc(out nint pointer, nuint bytes, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemFreeHost(nint pointer);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemcpyHtoDAsync_v2(nint destination, nint source, nuint bytes, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuMemcpyDtoHAsync_v2(nint destination, nint source, nuint bytes, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuStreamBeginCapture_v2(nint stream, CuStreamCaptureMode mode);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuStreamEndCapture(nint stream, out nint graph);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuGraphLaunch(nint graphExec, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuGraphDestroy(nint graph);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial CuResult cuGraphExecDestroy(nint graphExec);
}
