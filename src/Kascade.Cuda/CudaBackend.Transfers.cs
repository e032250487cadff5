using Kascade.Core;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>Copies between the host and the device: step inputs and sampled tokens, tensors, cached keys, uploads.</summary>
public sealed unsafe partial class CudaBackend
{
    public void WriteStep(StepInputs step, ReadOnlySpan<int> ids, int startPosition)
    {
        var s = (CudaStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ids.Length, s.MaxTokens);
        ThrowIfRecording("WriteStep");
        // The previous copy out of the staging memory may still be queued: wait for it, not for the whole stream.
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        var staging = s.HostPositionAndIds(ids.Length);
        staging[0] = startPosition;
        ids.CopyTo(staging[1..]);
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoDAsync_v2(s.Position, s.HostPosition, (nuint)CudaStepInputs.PositionAndIdsBytes(ids.Length), _stream.Value), "cuMemcpyHtoDAsync");
        CudaCheck.ThrowIfFailed(Driver.cuEventRecord(s.Copied.Value, _stream.Value), "cuEventRecord");
    }

    public void ReadTokens(StepInputs step, Span<int> ids)
    {
        var s = (CudaStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ids.Length, s.MaxTokens);
        ThrowIfRecording("ReadTokens");
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoHAsync_v2(s.HostIdsAddress, s.Ids, (nuint)(ids.Length * sizeof(int)), _stream.Value), "cuMemcpyDtoHAsync");
        CudaCheck.ThrowIfFailed(Driver.cuEventRecord(s.Copied.Value, _stream.Value), "cuEventRecord");
        CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(s.Copied.Value), "cuEventSynchronize");
        s.HostIds(ids.Length).CopyTo(ids);
    }

    public void ReadKeys(KvCache cache, int layer, int count, Span<float> destination)
    {
        var c = (CudaKvCache)cache;
        int d = c.Shape.HeadDim;
        var bits = new ushort[count * d];
        ThrowIfRecording("ReadKeys");
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        for (int h = 0; h < c.Shape.KvHeads; h++)
        {
            fixed (ushort* p = bits)
            {
                nint source = c.LayerKeys(layer) + (nint)((long)h * c.Shape.Capacity * d * sizeof(ushort));
                CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, source, (nuint)(bits.Length * sizeof(ushort))), "cuMemcpyDtoH");
            }
            DTypes.Bf16ToSingle(bits, destination.Slice(h * count * d, count * d));
        }
    }

    public void Read(DeviceTensor x, Span<float> destination)
    {
        ThrowIfRecording("Read");
        var t = (CudaTensor)x;
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        fixed (float* p = destination)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemcpyDtoH_v2((nint)p, t.Pointer, (nuint)(t.Elements * sizeof(float))), "cuMemcpyDtoH");
        }
    }

    public void Write(DeviceTensor x, ReadOnlySpan<float> values)
    {
        fixed (float* p = values)
        {
            Copy(((CudaTensor)x).Pointer, (nint)p, (long)values.Length * sizeof(float));
        }
    }

    private DeviceMemory Upload(float[] values)
    {
        var memory = DeviceMemory.Allocate((long)values.Length * sizeof(float));
        fixed (float* p = values)
        {
            Copy(memory.Pointer, (nint)p, (long)values.Length * sizeof(float));
        }
        return memory;
    }

    private void Copy(nint destination, nint source, long bytes)
    {
        ThrowIfRecording("a host-to-device copy");
        // Host→device copies of pageable memory are synchronous; finish queued kernels that may read the target first.
        CudaCheck.ThrowIfFailed(Driver.cuStreamSynchronize(_stream.Value), "cuStreamSynchronize");
        CudaCheck.ThrowIfFailed(Driver.cuMemcpyHtoD_v2(destination, source, (nuint)bytes), "cuMemcpyHtoD");
    }
}
