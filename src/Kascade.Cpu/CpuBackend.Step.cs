using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>A step's token ids, start position and draw count in host memory.</summary>
public sealed class CpuStepInputs(int maxTokens) : StepInputs(maxTokens)
{
    internal int[] Ids { get; } = new int[maxTokens];

    internal int Position { get; set; }

    internal long Draws { get; set; }

    /// <summary>The start position an op uses: its arguments' value, which must be the step's (a session bug otherwise).</summary>
    internal static int Start(StepInputs? step, int startPosition)
    {
        if (step is CpuStepInputs s && s.Position != startPosition)
        {
            throw new InvalidOperationException($"an op was issued for position {startPosition}, but its step is at {s.Position}");
        }
        return startPosition;
    }

    public override void Dispose()
    {
    }
}

public sealed partial class CpuBackend
{
    public StepInputs AllocateStepInputs(int maxTokens) => new CpuStepInputs(maxTokens);

    public void WriteStep(StepInputs step, ReadOnlySpan<int> ids, int startPosition)
    {
        var s = (CpuStepInputs)step;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ids.Length, s.MaxTokens);
        ids.CopyTo(s.Ids);
        s.Position = startPosition;
    }

    public void Sample(DeviceTensor logits, SamplingOptions options, StepInputs step)
    {
        var s = (CpuStepInputs)step;
        var l = (CpuTensor)logits;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(logits.Rows, s.MaxTokens);
        for (int r = 0; r < logits.Rows; r++)
        {
            s.Ids[r] = Sampling.Choose(l.Row(r), options, s.Draws + r);
        }
        s.Draws += logits.Rows;
    }

    public void Advance(StepInputs step, int tokens) => ((CpuStepInputs)step).Position += tokens;

    public void ReadTokens(StepInputs step, Span<int> ids) => ((CpuStepInputs)step).Ids.AsSpan(0, ids.Length).CopyTo(ids);

    /// <summary>The CPU runs each op as it is issued.</summary>
    public IRecordedStep? Record(Action issue) => null;
}
