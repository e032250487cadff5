using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>fp32 activations <c>[Rows, Cols]</c> in device memory.</summary>
public sealed class CudaTensor : DeviceTensor
{
    private readonly DeviceMemory _memory;
    private readonly bool _ownsMemory;

    internal CudaTensor(DeviceMemory memory, long offsetBytes, int rows, int cols, bool ownsMemory)
        : base(rows, cols)
    {
        _memory = memory;
        _ownsMemory = ownsMemory;
        OffsetBytes = offsetBytes;
    }

    internal long OffsetBytes { get; }

    internal nint Pointer => _memory.Pointer + (nint)OffsetBytes;

    internal long Elements => (long)Rows * Cols;

    public override DeviceTensor Take(int rows) => Slice(0, rows);

    public override DeviceTensor Slice(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, Rows);
        return new CudaTensor(_memory, OffsetBytes + (long)start * Cols * sizeof(float), count, Cols, ownsMemory: false);
    }

    /// <summary>Views share the allocation; only the tensor made by Allocate frees it.</summary>
    public override void Dispose()
    {
        if (_ownsMemory)
        {
            _memory.Dispose();
        }
    }
}

/// <summary>A weight on the GPU: matrices as bf16 <c>[Rows, Cols]</c>, vectors (norms, biases) as fp32.</summary>
public sealed class CudaWeight : Weight
{
    internal CudaWeight(string name, DType dtype, int rows, int cols, DeviceMemory memory)
        : base(name, dtype, rows, cols)
    {
        Memory = memory;
    }

    internal DeviceMemory Memory { get; }

    internal nint Pointer => Memory.Pointer;

    public override void Dispose() => Memory.Dispose();
}

/// <summary>bf16 cache, per layer <c>[KvHeads, Capacity, HeadDim]</c> for keys and for values.</summary>
public sealed class CudaKvCache : KvCache
{
    internal CudaKvCache(KvCacheShape shape)
        : base(shape)
    {
        LayerBytes = (long)shape.KvHeads * shape.Capacity * shape.HeadDim * 2;
        Keys = DeviceMemory.Allocate(LayerBytes * shape.Layers);
        try
        {
            Values = DeviceMemory.Allocate(LayerBytes * shape.Layers);
        }
        catch
        {
            Keys.Dispose();
            throw;
        }
    }

    internal long LayerBytes { get; }

    internal DeviceMemory Keys { get; }

    internal DeviceMemory Values { get; }

    /// <summary>Layer <paramref name="layer"/>'s keys, bf16 <c>[KvHeads, Capacity, HeadDim]</c>.</summary>
    internal nint LayerKeys(int layer) => Keys.Pointer + (nint)(LayerBytes * layer);

    /// <summary>Layer <paramref name="layer"/>'s values, as <see cref="LayerKeys"/>.</summary>
    internal nint LayerValues(int layer) => Values.Pointer + (nint)(LayerBytes * layer);

    public override void Dispose()
    {
        Keys.Dispose();
        Values.Dispose();
    }
}

/// <summary>
/// A step's inputs in device memory — draw count (int64), start position (int32), token ids (int32 <c>[MaxTokens]</c>) —
/// and the page-locked host memory they are written from and read into.
/// </summary>
public sealed class CudaStepInputs : StepInputs
{
    private const int PositionOffset = 8, IdsOffset = 12;

    internal CudaStepInputs(int maxTokens)
        : base(maxTokens)
    {
        long bytes = IdsOffset + (long)maxTokens * sizeof(int);
        Device = DeviceMemory.Allocate(bytes);
        // The draw count starts at 0 (cuMemAlloc does not clear).
        CudaCheck.ThrowIfFailed(Driver.cuMemsetD8_v2(Device.Pointer, 0, (nuint)bytes), "cuMemsetD8");
        Host = PinnedMemory.Allocate(bytes);
        Copied = EventHandle.Create();
    }

    internal DeviceMemory Device { get; }

    /// <summary>The staging copy: WriteStep fills its position and ids; ReadTokens receives ids into it.</summary>
    internal PinnedMemory Host { get; }

    /// <summary>Recorded after the last copy that reads or writes <see cref="Host"/>; waited for before the host touches it again.</summary>
    internal EventHandle Copied { get; }

    internal nint DrawCount => Device.Pointer;

    internal nint Position => Device.Pointer + PositionOffset;

    internal nint Ids => Device.Pointer + IdsOffset;

    /// <summary>Where WriteStep stages the position and the ids, in the device layout.</summary>
    internal nint HostPosition => Host.Pointer + PositionOffset;

    /// <summary>Where ReadTokens receives the ids.</summary>
    internal nint HostIdsAddress => Host.Pointer + IdsOffset;

    internal static long PositionAndIdsBytes(int tokens) => IdsOffset - PositionOffset + (long)tokens * sizeof(int);

    internal unsafe Span<int> HostPositionAndIds(int tokens) => new((void*)HostPosition, 1 + tokens);

    internal unsafe Span<int> HostIds(int tokens) => new((void*)HostIdsAddress, tokens);

    public override void Dispose()
    {
        Device.Dispose();
        Host.Dispose();
        Copied.Dispose();
    }
}
