using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>
/// <see cref="IBatchedDecode"/> on the CPU, the reference: each sequence's decode step through the single-sequence op
/// (sequence b is layer b of the cache, and of a selector's state), its plan rows copied to and from unit b.
/// </summary>
public sealed partial class CpuBackend : IBatchedDecode
{
    /// <summary>Every shape the single-sequence ops run.</summary>
    public bool RunsBatchedKascade(AttentionArgs args) => true;

    public void BatchedDecodeAttention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        BatchedDecodeArgs.Check(args, cache, q, output);
        for (int b = 0; b < args.Tokens; b++)
        {
            Attention(SequenceStep(args, b), q.Slice(b, 1), cache, output.Slice(b, 1));
        }
    }

    public void BatchedAnchorAttention(AttentionArgs args, SelectionArgs selection, DeviceTensor q, KvCache cache, KeyPlan plan, DeviceTensor output)
    {
        BatchedDecodeArgs.Check(args, cache, q, output, plan);
        var p = (CpuKeyPlan)plan;
        using var single = new CpuKeyPlan(1, p.Selectors, p.Capacity, p.Unit);
        for (int b = 0; b < args.Tokens; b++)
        {
            AnchorAttention(SequenceStep(args, b), selection, q.Slice(b, 1), cache, single, output.Slice(b, 1));
            single.CopyUnit(0, p, b);
        }
        p.Serve(args, 1, recording: false);
    }

    public void BatchedSparseAttention(AttentionArgs args, KeyPlan plan, IReadOnlyList<int> headMap, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        BatchedDecodeArgs.Check(args, cache, q, output, plan);
        var p = (CpuKeyPlan)plan;
        var step = args with { Tokens = 1 };
        p.CheckServes(step);
        using var single = new CpuKeyPlan(1, p.Selectors, p.Capacity, p.Unit);
        single.Serve(step, 1, recording: false);
        for (int b = 0; b < args.Tokens; b++)
        {
            p.CopyUnit(b, single, 0);
            SparseAttention(SequenceStep(args, b), single, headMap, q.Slice(b, 1), cache, output.Slice(b, 1));
        }
    }

    /// <summary>Every selector at every shape the single-sequence ops run.</summary>
    public bool RunsBatchedSelector(AttentionArgs args, KeySelector selector) => true;

    public void BatchedUpdateSelectorState(AttentionArgs args, KvCache cache, SelectorState state)
    {
        BatchedDecodeArgs.CheckSelector(args, cache, state);
        for (int b = 0; b < args.Tokens; b++)
        {
            UpdateSelectorState(SequenceStep(args, b), cache, state);
        }
    }

    public void BatchedSelectKeys(AttentionArgs args, DeviceTensor q, KvCache cache, SelectorState state, KeyPlan plan)
    {
        BatchedDecodeArgs.Check(args, cache, q, output: null, plan);
        BatchedDecodeArgs.CheckSelector(args, cache, state, plan);
        var p = (CpuKeyPlan)plan;
        using var single = new CpuKeyPlan(1, p.Selectors, p.Capacity, p.Unit);
        for (int b = 0; b < args.Tokens; b++)
        {
            SelectKeys(SequenceStep(args, b), q.Slice(b, 1), cache, state, single);
            single.CopyUnit(0, p, b);
        }
        p.Serve(args, 1, recording: false);
    }

    /// <summary>Sequence b's decode step: one query over layer b of the batch's cache.</summary>
    private static AttentionArgs SequenceStep(AttentionArgs args, int b) => args with { Layer = b, Tokens = 1 };
}
