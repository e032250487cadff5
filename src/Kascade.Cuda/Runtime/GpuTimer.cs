using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>
/// Times work on the backend's stream with CUDA events (DESIGN §7): warm-up, L2 flushed before every run by
/// writing a buffer larger than the L2, median of the runs.
/// </summary>
public sealed class GpuTimer : IDisposable
{
    /// <summary>Larger than any current L2 (H100: 50 MB, H200: 60 MB).</summary>
    private const long FlushBytes = 256L << 20;

    private readonly nint _stream;
    private readonly nint _start;
    private readonly nint _end;
    private readonly DeviceMemory _flush;

    internal GpuTimer(nint stream)
    {
        _stream = stream;
        CudaCheck.ThrowIfFailed(Driver.cuEventCreate(out _start, 0), "cuEventCreate");
        CudaCheck.ThrowIfFailed(Driver.cuEventCreate(out _end, 0), "cuEventCreate");
        _flush = DeviceMemory.Allocate(FlushBytes);
    }

    /// <summary>Median milliseconds of <paramref name="runs"/> timed runs of <paramref name="work"/> after <paramref name="warmup"/> untimed ones.</summary>
    public double MedianMilliseconds(Action work, int runs = 20, int warmup = 3)
    {
        for (int i = 0; i < warmup; i++)
        {
            work();
        }
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            CudaCheck.ThrowIfFailed(Driver.cuMemsetD32Async(_flush.Pointer, (uint)i, (nuint)(FlushBytes / 4), _stream), "cuMemsetD32Async");
            CudaCheck.ThrowIfFailed(Driver.cuEventRecord(_start, _stream), "cuEventRecord");
            work();
            CudaCheck.ThrowIfFailed(Driver.cuEventRecord(_end, _stream), "cuEventRecord");
            CudaCheck.ThrowIfFailed(Driver.cuEventSynchronize(_end), "cuEventSynchronize");
            CudaCheck.ThrowIfFailed(Driver.cuEventElapsedTime(out float ms, _start, _end), "cuEventElapsedTime");
            times[i] = ms;
        }
        Array.Sort(times);
        return times[runs / 2];
    }

    public void Dispose()
    {
        Driver.cuEventDestroy_v2(_start);
        Driver.cuEventDestroy_v2(_end);
        _flush.Dispose();
    }
}
