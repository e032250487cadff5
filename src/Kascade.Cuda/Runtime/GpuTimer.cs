using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>How <see cref="GpuTimer"/> empties the L2 before each timed run.</summary>
public enum L2Flush
{
    /// <summary>
    /// Read a buffer larger than the L2: the cache then holds clean lines, as after the weight reads that precede
    /// attention in a real step, and the timed work pays for nothing but its own traffic.
    /// </summary>
    Read,

    /// <summary>
    /// Write such a buffer (a memset): the cache is left full of dirty lines whose write-back the timed work pays for
    /// (about 10 µs on an H100, bench/results/attention-h100.md). Kept to compare with runs that flushed this way.
    /// </summary>
    Write,
}

/// <summary>
/// Times work on the backend's stream with CUDA events (DESIGN §7): warm-up, L2 flushed before every run (by
/// <see cref="L2Flush"/>), median of the runs.
/// </summary>
public sealed class GpuTimer : IDisposable
{
    /// <summary>Larger than any current L2 (H100: 50 MB, H200: 60 MB).</summary>
    public const long FlushBytes = 256L << 20;

    private readonly nint _stream;
    private readonly nint _start;
    private readonly nint _end;
    private readonly DeviceMemory _flush;
    private readonly L2Flush _mode;
    private readonly Action<nint, long> _read;

    /// <param name="read">Launches a kernel on <paramref name="stream"/> that reads the given zeroed buffer of the given bytes.</param>
    internal GpuTimer(nint stream, L2Flush mode, Action<nint, long> read)
    {
        _stream = stream;
        _mode = mode;
        _read = read;
        CudaCheck.ThrowIfFailed(Driver.cuEventCreate(out _start, 0), "cuEventCreate");
        CudaCheck.ThrowIfFailed(Driver.cuEventCreate(out _end, 0), "cuEventCreate");
        _flush = DeviceMemory.Allocate(FlushBytes);
        CudaCheck.ThrowIfFailed(Driver.cuMemsetD32Async(_flush.Pointer, 0, (nuint)(FlushBytes / 4), _stream), "cuMemsetD32Async");
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
            if (_mode == L2Flush.Read)
            {
                _read(_flush.Pointer, FlushBytes);
            }
            else
            {
                CudaCheck.ThrowIfFailed(Driver.cuMemsetD32Async(_flush.Pointer, (uint)i, (nuint)(FlushBytes / 4), _stream), "cuMemsetD32Async");
            }
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
