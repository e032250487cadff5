using System.Globalization;
using System.Text;
using Kascade.Core;
using Kascade.Cuda;
using Kascade.Cuda.Runtime;
using Kascade.Runtime.Attention;

namespace Kascade.Cli;

/// <summary>
/// One context of <c>bench attention --attention kascade</c>: median milliseconds of our dense decode kernel and of each
/// Kascade decode kernel (layer 0 = dense output + selection, anchor = selection + sparse output, reuse = sparse
/// attention over the plan), and the per-layer average of a 32-layer schedule.
/// </summary>
/// <param name="TopKDecode">Our Top-k alone over a decode step's rows (one per KV head and sequence of the batch) of <paramref name="Context"/> scores.</param>
/// <param name="TopKWide">Our Top-k alone over <see cref="WideRows"/> rows (a prefill chunk's tiles × KV heads) of the same length.</param>
/// <param name="AnchorBytes">Device memory an anchor layer takes beyond dense attention (its plan and selection workspace), as the driver counts it: measured at the run's first context only (the workspace grows and is kept, so later contexts would count only the growth).</param>
/// <param name="ReuseExact">At batch 1, the reuse layer on the exact CUDA-core kernel (<see cref="CudaBackend.FastSelection"/> off), and its largest difference from <paramref name="Reuse"/>'s output; NaN for a batch (the batched ops run the fast kernels only).</param>
public sealed record KascadeBenchmarkRow(int Context, int TopK, double Dense, double LayerZero, double Anchor, double Reuse, double TopKDecode, double TopKWide, long? AnchorBytes, double ReuseExact = double.NaN, double ExactDifference = double.NaN)
{
    /// <summary>Rows of the wide Top-k timing: issue 15 §5's 512 rows (torch.topk's row in bench/peers/topk_peer.py).</summary>
    public const int WideRows = 512;

    /// <summary>The paper's mix (DESIGN §3): layer 0, four more anchors and 27 reuse layers of 32.</summary>
    public const int Layers = 32, Anchors = 4;

    public double Average => AverageOf(LayerZero, Anchor, Reuse);

    /// <summary>The per-layer cost of the paper's mix: layer 0, <see cref="Anchors"/> more anchors, the rest reuse layers.</summary>
    public static double AverageOf(double layerZero, double anchor, double reuse) => (layerZero + Anchors * anchor + (Layers - 1 - Anchors) * reuse) / Layers;

    /// <summary>How a table's per-layer average is made, for its header.</summary>
    public static string AverageRule => $"per-layer average = (layer 0 + {Anchors} anchors + {Layers - 1 - Anchors} reuse) / {Layers}";
}

/// <summary>
/// Kascade's decode kernels on the GPU against our dense decode kernel, in the same run, on a batch of sequences of
/// random keys, values and queries (the paper's shapes by default), each its own cache of the context: at batch 1 the
/// ops a session's decode step runs, above it the batched ops (<see cref="IBatchedDecode"/>, through
/// <see cref="AttentionOps"/>). Timed as
/// <see cref="AttentionBenchmark"/>: CUDA events, L2 flushed before each run, median.
/// </summary>
public static class KascadeAttentionBenchmark
{
    public static IReadOnlyList<KascadeBenchmarkRow> Run(CudaBackend backend, AttentionBenchmarkOptions o, double topKPercent, Action<int>? onContext = null)
    {
        if (o.Phase != "decode")
        {
            throw new KascadeException("KascadeAttentionBenchmark times decode (prefill: KascadePrefillBenchmark)");
        }
        var rows = new List<KascadeBenchmarkRow>();
        using var timer = backend.CreateTimer(o.Flush);
        var rng = new Random(3);
        LoadKernels(backend, o, topKPercent, tokens: 1);
        int batch = o.Batch, width = o.Heads * o.HeadDim;
        // One decode step of each sequence: the backend's own ops at batch 1, its batched ops above.
        var ops = AttentionOps.For(backend, batch);
        foreach (int context in o.Contexts)
        {
            using var cache = backend.AllocateKvCache(new KvCacheShape(batch, o.KvHeads, o.HeadDim, context));
            AttentionBenchmark.Fill(backend, cache, batch, context, rng);
            using var q = backend.Upload(AttentionBenchmark.RandomValues(rng, batch * width), batch, width);
            using var output = backend.Allocate(batch, width);
            var step = new AttentionArgs(0, 1, context - 1, o.Heads, o.KvHeads, o.HeadDim, 1f / MathF.Sqrt(o.HeadDim));
            int topK = TopKBudget.For(context, topKPercent);
            double Time(Action run) => timer.MedianMilliseconds(run, o.Runs, 5);
            double dense = Time(() => ops.Dense(step, q, cache, output));
            // What an anchor allocates beyond dense attention (cuMemAlloc is synchronous): the driver's free memory before its
            // plan and after a layer 0 and an anchor have run once, at the first context (before any selection workspace exists).
            long freeBefore = backend.Device.MemoryInfo().Free;
            using var plan = backend.AllocatePlan(batch, o.KvHeads, topK);
            var anchor = new SelectionArgs(topKPercent, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false);
            var identity = Enumerable.Range(0, o.KvHeads).ToArray();
            ops.Anchor(step, anchor with { DenseOutput = true }, q, cache, plan, output);
            ops.Anchor(step, anchor, q, cache, plan, output);
            long? anchorBytes = rows.Count == 0 ? freeBefore - backend.Device.MemoryInfo().Free : null;
            double layerZero = Time(() => ops.Anchor(step, anchor with { DenseOutput = true }, q, cache, plan, output));
            double anchorMs = Time(() => ops.Anchor(step, anchor, q, cache, plan, output));
            double reuse = Time(() => ops.Sparse(step, plan, identity, q, cache, output));
            // At batch 1, the same reuse layer on the exact CUDA-core kernel, and how far its output is from the fast one's
            // (the batched ops run on the fast kernels only).
            double reuseExact = double.NaN, difference = double.NaN;
            if (batch == 1)
            {
                var fastOut = new float[width];
                backend.Read(output, fastOut);
                reuseExact = backend.WithExactKernels(() => Time(() => backend.SparseAttention(step, plan, identity, q, cache, output)));
                var exactOut = new float[width];
                backend.Read(output, exactOut);
                difference = fastOut.Zip(exactOut).Max(p => Math.Abs(p.First - p.Second));
            }
            double TimeTopK(int scoreRows)
            {
                using var scores = backend.Upload(AttentionBenchmark.RandomValues(rng, scoreRows * context), scoreRows, context);
                using var rowsPlan = backend.AllocatePlan(scoreRows, 1, topK);
                return Time(() => backend.TopKRows(scores, rowsPlan));
            }
            rows.Add(new KascadeBenchmarkRow(context, topK, dense, layerZero, anchorMs, reuse, TimeTopK(batch * o.KvHeads), TimeTopK(KascadeBenchmarkRow.WideRows), anchorBytes, reuseExact, difference));
            onContext?.Invoke(context);
        }
        return rows;
    }

    /// <summary>
    /// A layer 0, an anchor and a reuse layer over <paramref name="tokens"/> queries at the end of a 1024-key context,
    /// untimed (1: a decode step; more: a prefill chunk): the kernels' modules are loaded, and their code's device memory
    /// taken, before a benchmark's first context measures an anchor's memory, which then counts its buffers alone.
    /// </summary>
    internal static void LoadKernels(CudaBackend backend, AttentionBenchmarkOptions o, double topKPercent, int tokens)
    {
        const int context = 1024;
        using var cache = backend.AllocateKvCache(new KvCacheShape(1, o.KvHeads, o.HeadDim, context));
        AttentionBenchmark.Fill(backend, cache, 1, context, new Random(1));
        using var q = backend.Upload(new float[tokens * o.Heads * o.HeadDim], tokens, o.Heads * o.HeadDim);
        using var output = backend.Allocate(tokens, o.Heads * o.HeadDim);
        using var plan = backend.AllocatePlan(KeyPlan.UnitsFor(tokens), o.KvHeads, TopKBudget.For(context, topKPercent));
        var args = new AttentionArgs(0, tokens, context - tokens, o.Heads, o.KvHeads, o.HeadDim, 1f / MathF.Sqrt(o.HeadDim));
        var anchor = new SelectionArgs(topKPercent, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: true);
        backend.AnchorAttention(args, anchor, q, cache, plan, output);
        backend.AnchorAttention(args, anchor with { DenseOutput = false }, q, cache, plan, output);
        backend.SparseAttention(args, plan, Enumerable.Range(0, o.KvHeads).ToArray(), q, cache, output);
    }

    /// <param name="copyGBps">The GPU's measured copy bandwidth: the reuse kernel's gathered bytes are shown as a fraction of it.</param>
    public static string ToMarkdown(CudaBackend backend, AttentionBenchmarkOptions o, double topKPercent, IReadOnlyList<KascadeBenchmarkRow> rows, double copyGBps)
    {
        var sb = new StringBuilder();
        string flush = o.Flush == L2Flush.Read ? "reading" : "writing";
        sb.AppendLine(CultureInfo.InvariantCulture, $"device: {backend.Name}; decode, batch {o.Batch}, {o.Heads} query heads, {o.KvHeads} KV heads, head dim {o.HeadDim}, bf16 KV cache, Top-k {topKPercent}%; CUDA events, L2 flushed by {flush} {GpuTimer.FlushBytes >> 20} MiB, median of {o.Runs}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"device copy bandwidth: {copyGBps:F0} GB/s; {KascadeBenchmarkRow.AverageRule}");
        sb.AppendLine();
        sb.AppendLine("| context | Top-k keys | dense ms | layer 0 ms | anchor ms | reuse ms | reuse gathered GB/s (of copy) | per-layer average ms | speedup over dense | Top-k alone, decode-step rows (batch × KV heads) ms | Top-k alone, 512 rows ms | reuse, exact kernel ms (max diff) | anchor extra memory MiB (first context) |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            double gathered = 2.0 * o.Batch * r.TopK * o.KvHeads * o.HeadDim * 2 / (r.Reuse * 1e-3) / 1e9;
            string exact = double.IsNaN(r.ReuseExact) ? "—" : string.Create(CultureInfo.InvariantCulture, $"{r.ReuseExact:F4} ({r.ExactDifference:E1})");
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Context} | {r.TopK} | {r.Dense:F4} | {r.LayerZero:F4} | {r.Anchor:F4} | {r.Reuse:F4} | {gathered:F0} ({gathered / copyGBps:P0}) | {r.Average:F4} | {r.Dense / r.Average:F2}× | {r.TopKDecode:F4} | {r.TopKWide:F4} | {exact} | {(r.AnchorBytes is { } bytes ? (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) : "—")} |");
        }
        return sb.ToString();
    }
}
