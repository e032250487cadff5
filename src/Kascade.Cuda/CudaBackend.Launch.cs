using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>A launch grid.</summary>
internal readonly record struct Dim3(uint X, uint Y, uint Z);

/// <summary>One kernel argument as the 8 bytes the launch passes by address (pointers, ints, longs, floats).</summary>
internal readonly struct KernelArg
{
    private KernelArg(long bits) => Bits = bits;

    public long Bits { get; }

    public static implicit operator KernelArg(nint value) => new(value);

    public static implicit operator KernelArg(int value) => new(value);

    public static implicit operator KernelArg(long value) => new(value);

    public static implicit operator KernelArg(float value) => new(BitConverter.SingleToInt32Bits(value));

    public static implicit operator KernelArg(double value) => new(BitConverter.DoubleToInt64Bits(value));
}

/// <summary>Kernel modules (compiled once per source and define set), launches and the scratch buffers they use.</summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<string, CudaModule> _modules = [];
    private CudaModule? _ops, _sampling;

    private CudaModule Ops => _ops ??= Module("ops.cu", new Dictionary<string, string>());

    private CudaModule SamplingModule => _sampling ??= Module("sampling.cu", new Dictionary<string, string>());

    /// <summary>The module of <paramref name="source"/> specialised by <paramref name="defines"/>, compiled (or read from the disk cache) once.</summary>
    private CudaModule Module(string source, IReadOnlyDictionary<string, string> defines)
    {
        string key = source + string.Concat(defines.OrderBy(d => d.Key, StringComparer.Ordinal).Select(d => $";{d.Key}={d.Value}"));
        if (!_modules.TryGetValue(key, out var module))
        {
            module = CudaModule.Load(_compiler.Compile(source, defines));
            _modules[key] = module;
        }
        return module;
    }

    private void Launch(CudaModule module, string name, uint grid, uint block, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module, name, new Dim3(grid, 1, 1), block, arguments);

    private void Launch(CudaModule module, string name, Dim3 grid, uint block, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module, name, grid, block, dependent: false, arguments);

    /// <summary>
    /// Launches kernel <paramref name="name"/> of <paramref name="module"/>; each argument is an 8-byte slot passed by
    /// address. The arguments live on the stack, so a launch allocates nothing. A <paramref name="dependent"/> kernel
    /// may start launching before the previous one in the stream ends (programmatic dependent launch, sm_90+); it
    /// waits for that one itself (<c>wait_for_previous_kernel</c>).
    /// </summary>
    private void Launch(CudaModule module, string name, Dim3 grid, uint block, bool dependent, params ReadOnlySpan<KernelArg> arguments) =>
        Launch(module.Function(name), name, grid, block, 0, dependent, arguments);

    /// <summary>The same for a function with <paramref name="sharedBytes"/> of dynamic shared memory.</summary>
    private void Launch(nint function, string name, Dim3 grid, uint block, uint sharedBytes, bool dependent, params ReadOnlySpan<KernelArg> arguments)
    {
        var slots = stackalloc long[arguments.Length];
        var pointers = stackalloc void*[arguments.Length];
        for (int i = 0; i < arguments.Length; i++)
        {
            slots[i] = arguments[i].Bits;
            pointers[i] = &slots[i];
        }
        Launch(function, name, grid, block, sharedBytes, pointers, dependent);
    }

    /// <summary>Launches a kernel whose one argument is the parameter struct <paramref name="parameters"/> (passed by address).</summary>
    private void LaunchWith<T>(nint function, string name, Dim3 grid, uint block, uint sharedBytes, T parameters, bool dependent = false)
        where T : unmanaged
    {
        void* argument = &parameters;
        Launch(function, name, grid, block, sharedBytes, &argument, dependent);
    }

    private void Launch(nint function, string name, Dim3 grid, uint block, uint sharedBytes, void** arguments, bool dependent)
    {
        if (!dependent || !Hopper)
        {
            CudaCheck.ThrowIfFailed(Driver.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block, 1, 1, sharedBytes, _stream.Value, arguments, null), $"cuLaunchKernel({name})");
            return;
        }
        var attribute = new CuLaunchAttribute { Id = CuLaunchAttribute.ProgrammaticStreamSerialization };
        attribute.Value[0] = 1;
        var config = new CuLaunchConfig
        {
            GridX = grid.X, GridY = grid.Y, GridZ = grid.Z, BlockX = block, BlockY = 1, BlockZ = 1, SharedBytes = sharedBytes,
            Stream = _stream.Value, Attributes = &attribute, AttributeCount = 1,
        };
        CudaCheck.ThrowIfFailed(Driver.cuLaunchKernelEx(&config, function, arguments, null), $"cuLaunchKernelEx({name})");
    }

    /// <summary>A reusable device buffer of at least <paramref name="bytes"/>, grown (never per token once warm).</summary>
    private DeviceMemory Scratch(ref DeviceMemory? buffer, long bytes)
    {
        if (buffer is null || buffer.Bytes < bytes)
        {
            if (buffer is not null && _recording is not null)
            {
                // A recording cannot wait for the stream; the old buffer lives until the recording ends.
                _retired.Add(buffer);
            }
            else if (buffer is not null)
            {
                CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
                buffer.Dispose();
            }
            buffer = DeviceMemory.Allocate(Math.Max(bytes, 1 << 16));
            _bufferGeneration++;
        }
        return buffer;
    }

    private static uint Blocks(long n) => (uint)Math.Clamp((n + Threads - 1) / Threads, 1, 65535);

    private static nint In(DeviceTensor t) => ((CudaTensor)t).Pointer;

    private static nint Out(DeviceTensor t) => ((CudaTensor)t).Pointer;
}
