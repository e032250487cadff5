using System.Runtime.InteropServices;
using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>A block of memory the driver allocated (<see cref="Bytes"/> long at <see cref="Pointer"/>), freed once by the subclass's call.</summary>
public abstract class DriverAllocation : SafeHandle
{
    private protected DriverAllocation(nint pointer, long bytes)
        : base(0, ownsHandle: true)
    {
        SetHandle(pointer);
        Bytes = bytes;
    }

    public long Bytes { get; }

    public nint Pointer => handle;

    public override bool IsInvalid => handle == 0;
}

/// <summary>Device memory from <c>cuMemAlloc</c>.</summary>
public sealed class DeviceMemory : DriverAllocation
{
    private DeviceMemory(nint pointer, long bytes)
        : base(pointer, bytes)
    {
    }

    public static DeviceMemory Allocate(long bytes)
    {
        CudaCheck.ThrowIfFailed(Driver.cuMemAlloc_v2(out nint pointer, (nuint)Math.Max(bytes, 1)), $"cuMemAlloc({bytes} bytes)");
        return new DeviceMemory(pointer, bytes);
    }

    protected override bool ReleaseHandle() => Driver.cuMemFree_v2(handle) == CuResult.Success;
}

/// <summary>Page-locked host memory from <c>cuMemHostAlloc</c>: the driver copies it asynchronously, in stream order.</summary>
internal sealed class PinnedMemory : DriverAllocation
{
    private PinnedMemory(nint pointer, long bytes)
        : base(pointer, bytes)
    {
    }

    public static PinnedMemory Allocate(long bytes)
    {
        CudaCheck.ThrowIfFailed(Driver.cuMemHostAlloc(out nint pointer, (nuint)Math.Max(bytes, 1), 0), $"cuMemHostAlloc({bytes} bytes)");
        return new PinnedMemory(pointer, bytes);
    }

    protected override bool ReleaseHandle() => Driver.cuMemFreeHost(handle) == CuResult.Success;
}

/// <summary>An instantiated CUDA graph (<c>cuGraphInstantiate</c>).</summary>
internal sealed class GraphExecHandle() : SafeHandle(0, ownsHandle: true)
{
    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    /// <summary>Instantiates <paramref name="graph"/>, which the caller still owns.</summary>
    public static GraphExecHandle Instantiate(nint graph)
    {
        CudaCheck.ThrowIfFailed(Driver.cuGraphInstantiateWithFlags(out nint exec, graph, 0), "cuGraphInstantiateWithFlags");
        var h = new GraphExecHandle();
        h.SetHandle(exec);
        return h;
    }

    protected override bool ReleaseHandle() => Driver.cuGraphExecDestroy(handle) == CuResult.Success;
}

/// <summary>A CUDA event (ordering host writes of pinned memory after the copies that read it).</summary>
internal sealed class EventHandle() : SafeHandle(0, ownsHandle: true)
{
    /// <summary><c>CU_EVENT_DISABLE_TIMING</c>: the lightest event.</summary>
    private const uint DisableTiming = 2;

    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    public static EventHandle Create()
    {
        CudaCheck.ThrowIfFailed(Driver.cuEventCreate(out nint e, DisableTiming), "cuEventCreate");
        var h = new EventHandle();
        h.SetHandle(e);
        return h;
    }

    protected override bool ReleaseHandle() => Driver.cuEventDestroy_v2(handle) == CuResult.Success;
}

/// <summary>A loaded module (cubin).</summary>
internal sealed class CudaModule() : SafeHandle(0, ownsHandle: true)
{
    private readonly Dictionary<string, nint> _functions = [];

    public override bool IsInvalid => handle == 0;

    public static CudaModule Load(byte[] cubin)
    {
        var pinned = GCHandle.Alloc(cubin, GCHandleType.Pinned);
        try
        {
            CudaCheck.ThrowIfFailed(Driver.cuModuleLoadData(out nint module, pinned.AddrOfPinnedObject()), "cuModuleLoadData");
            var h = new CudaModule();
            h.SetHandle(module);
            return h;
        }
        finally
        {
            pinned.Free();
        }
    }

    public nint Function(string name)
    {
        if (!_functions.TryGetValue(name, out nint f))
        {
            CudaCheck.ThrowIfFailed(Driver.cuModuleGetFunction(out f, handle, name), $"cuModuleGetFunction({name})");
            _functions[name] = f;
        }
        return f;
    }

    protected override bool ReleaseHandle() => Driver.cuModuleUnload(handle) == CuResult.Success;
}

/// <summary>A CUDA stream.</summary>
internal sealed class StreamHandle() : SafeHandle(0, ownsHandle: true)
{
    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    public static StreamHandle Create()
    {
        CudaCheck.ThrowIfFailed(Driver.cuStreamCreate(out nint s, 0), "cuStreamCreate");
        var h = new StreamHandle();
        h.SetHandle(s);
        return h;
    }

    protected override bool ReleaseHandle() => Driver.cuStreamDestroy_v2(handle) == CuResult.Success;
}

/// <summary>A cuBLASLt object (context, matmul descriptor, matrix layout or preference), released by its own destroy call.</summary>
internal sealed class CublasLtObject : SafeHandle
{
    private readonly Func<nint, CublasStatus> _destroy;

    private CublasLtObject(nint value, Func<nint, CublasStatus> destroy)
        : base(0, ownsHandle: true)
    {
        SetHandle(value);
        _destroy = destroy;
    }

    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    /// <summary>Wraps what <paramref name="call"/> created (throwing with its name if it failed).</summary>
    public static CublasLtObject Created(CublasStatus status, nint value, Func<nint, CublasStatus> destroy, string call)
    {
        CudaCheck.ThrowIfFailed(status, call);
        return new CublasLtObject(value, destroy);
    }

    protected override bool ReleaseHandle() => _destroy(handle) == CublasStatus.Success;
}
