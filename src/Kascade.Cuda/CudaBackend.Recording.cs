using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>Decode steps recorded as CUDA graphs, and what keeps a recording replayable: no host waits, the position read on the device.</summary>
public sealed unsafe partial class CudaBackend
{
    private StepRecording? _recording;

    /// <summary>Bumped whenever a buffer a recorded step may point at (scratch, rotary tables) is replaced.</summary>
    private int _bufferGeneration;

    /// <summary>Replaced buffers that a recording in progress may still reach; freed after it.</summary>
    private readonly List<DeviceMemory> _retired = [];

    /// <summary>
    /// Records the ops into a CUDA graph (stream capture): one launch replays them all, so a decode step costs one
    /// launch instead of one per kernel. Null when <see cref="RecordSteps"/> is off.
    /// </summary>
    public IRecordedStep? Record(Action issue)
    {
        if (!RecordSteps)
        {
            return null;
        }
        if (_recording is not null)
        {
            throw new InvalidOperationException("a step is already being recorded");
        }
        // A buffer that grows during the capture leaves the ops captured before it pointing at the old one: capture
        // again, now that every buffer has its size.
        while (true)
        {
            var recording = new StepRecording();
            _recording = recording;
            // Relaxed: kernels compiled and buffers allocated on first use during the capture are allowed.
            CudaCheck.ThrowIfFailed(Driver.cuStreamBeginCapture_v2(_stream.Value, CuStreamCaptureMode.Relaxed), "cuStreamBeginCapture");
            nint graph = 0;
            bool grew;
            try
            {
                try
                {
                    issue();
                }
                finally
                {
                    _recording = null;
                    var ended = Driver.cuStreamEndCapture(_stream.Value, out graph);
                    grew = _retired.Count > 0;
                    foreach (var buffer in _retired)
                    {
                        buffer.Dispose();
                    }
                    _retired.Clear();
                    CudaCheck.ThrowIfFailed(ended, "cuStreamEndCapture");
                }
                if (!grew)
                {
                    return new CudaRecordedStep(this, GraphExecHandle.Instantiate(graph), recording.Attention, _bufferGeneration);
                }
            }
            finally
            {
                if (graph != 0)
                {
                    Driver.cuGraphDestroy(graph);
                }
            }
        }
    }

    /// <summary>Whether <see cref="Record"/> makes CUDA graphs (on by default; off runs every op as it is issued, for comparisons).</summary>
    public bool RecordSteps { get; set; } = true;

    /// <summary>What a recording in progress has launched that depends on the position: its attention calls' shapes and plans.</summary>
    private sealed class StepRecording
    {
        public Dictionary<AttentionShape, (AttentionKernel Kernel, int Splits)> Attention { get; } = [];
    }

    /// <summary>A decode step as an instantiated CUDA graph.</summary>
    private sealed class CudaRecordedStep(CudaBackend backend, GraphExecHandle graph, Dictionary<AttentionShape, (AttentionKernel Kernel, int Splits)> attention, int generation) : IRecordedStep
    {
        public bool TryReplay(int startPosition)
        {
            if (generation != backend._bufferGeneration)
            {
                return false;
            }
            foreach (var (shape, recorded) in attention)
            {
                var plan = backend.PlanAttention(shape, startPosition).Plan;
                if (plan.Kernel != recorded.Kernel || plan.Splits != recorded.Splits)
                {
                    return false;
                }
            }
            CudaCheck.ThrowIfFailed(Driver.cuGraphLaunch(graph.Value, backend._stream.Value), "cuGraphLaunch");
            return true;
        }

        public void Dispose() => graph.Dispose();
    }

    /// <summary>
    /// The device address of a step's start position for a kernel, or 0 (the kernel uses the value it is given). A
    /// recorded step replays at later positions, so every position-dependent op in one must read it from its step.
    /// </summary>
    private nint StartOnDevice(StepInputs? step)
    {
        if (step is null && _recording is not null)
        {
            throw new InvalidOperationException("an op in a recorded step must read its start position from a StepInputs");
        }
        return step is CudaStepInputs s ? s.Position : 0;
    }

    private void ThrowIfRecording(string what)
    {
        if (_recording is not null)
        {
            throw new InvalidOperationException($"{what} waits for the host and cannot be part of a recorded step");
        }
    }
}
