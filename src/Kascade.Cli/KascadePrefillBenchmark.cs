using System.Globalization;
using System.Text;
using Kascade.Core;
using Kascade.Cuda;
using Kascade.Cuda.Runtime;

namespace Kascade.Cli;

/// <summary>
/// One context of <c>bench attention --phase prefill --attention kascade</c>: milliseconds to prefill one layer of a
/// prompt of <paramref name="Context"/> tokens — our dense kernel over the whole prompt in one call, and, in chunks of
/// <see cref="KascadePrefillBenchmark.Chunk"/> as a Kascade session prefills (its plans and scores bounded by the
/// chunk), dense, layer 0 (dense output + selection), an anchor (selection + sparse output) and a reuse layer.
/// <paramref name="AnchorBytes"/>: device memory an anchor takes beyond dense attention (its plan and workspace), measured
/// at the run's first context only (the workspace grows and is kept). <paramref name="AnchorBf16"/>,
/// <paramref name="LayerZeroBf16"/>: the same with <see cref="ScorePrecision.Bf16"/> scores (one MMA per score).
/// </summary>
public sealed record KascadePrefillRow(int Context, double Dense, double DenseChunked, double LayerZero, double Anchor, double Reuse, long? AnchorBytes,
    double LayerZeroBf16, double AnchorBf16)
{
    public double Average => KascadeBenchmarkRow.AverageOf(LayerZero, Anchor, Reuse);

    /// <summary>The per-layer average with bf16 scores in layer 0 and the anchors.</summary>
    public double AverageBf16 => KascadeBenchmarkRow.AverageOf(LayerZeroBf16, AnchorBf16, Reuse);
}

/// <summary>
/// Kascade's prefill kernels on the GPU beside our dense kernel, on one prompt of random keys, values and queries (the
/// paper's shapes by default). Each case runs every chunk of the prompt once per timed run (CUDA events, L2 flushed
/// before each run, median). A reuse layer attends over its anchor's plan of the same chunk: every chunk's plan is kept
/// (chunks × tiles × KV heads × Top-k ints, 1.7 GB at 128k), filled by an anchor once, so that the reuse layer is timed
/// alone — as a difference of two timings (anchor + reuse less anchor) it was noise-bound, a few percent of a 600 ms
/// anchor against a 37 ms reuse layer at 128k (session 15: 1.5 ms a layer at 64k against 7.3 at 32k in one run).
/// </summary>
public static class KascadePrefillBenchmark
{
    /// <summary>Tokens per prefill chunk: a chunk's pooled scores take tiles · KV heads · context fp32 (540 MB at 128k).</summary>
    public const int Chunk = 4096;

    public static IReadOnlyList<KascadePrefillRow> Run(CudaBackend backend, AttentionBenchmarkOptions o, double topKPercent, Action<int>? onContext = null)
    {
        var rows = new List<KascadePrefillRow>();
        using var timer = backend.CreateTimer(o.Flush);
        var rng = new Random(3);
        int runs = Math.Max(3, o.Runs / 5);
        KascadeAttentionBenchmark.LoadKernels(backend, o, topKPercent, tokens: 256);
        foreach (int context in o.Contexts)
        {
            using var cache = backend.AllocateKvCache(new KvCacheShape(1, o.KvHeads, o.HeadDim, context));
            AttentionBenchmark.Fill(backend, cache, 1, context, rng);
            using var q = backend.Upload(AttentionBenchmark.RandomValues(rng, context * o.Heads * o.HeadDim), context, o.Heads * o.HeadDim);
            using var output = backend.Allocate(context, o.Heads * o.HeadDim);
            double Time(Action run) => timer.MedianMilliseconds(run, runs, 1);
            var whole = new AttentionArgs(0, context, 0, o.Heads, o.KvHeads, o.HeadDim, 1f / MathF.Sqrt(o.HeadDim));
            var anchor = new SelectionArgs(topKPercent, ScorePooling.PostSoftmax, PoolAllHeads: false, DenseOutput: false);
            var identity = Enumerable.Range(0, o.KvHeads).ToArray();
            void Chunks(Action<AttentionArgs, DeviceTensor, DeviceTensor> op) => IndexedChunks((_, a, qs, os) => op(a, qs, os));
            void IndexedChunks(Action<int, AttentionArgs, DeviceTensor, DeviceTensor> op)
            {
                for (int start = 0; start < context; start += Chunk)
                {
                    int tokens = Math.Min(Chunk, context - start);
                    op(start / Chunk, whole with { StartPosition = start, Tokens = tokens }, q.Slice(start, tokens), output.Slice(start, tokens));
                }
            }
            double dense = Time(() => backend.Attention(whole, q, cache, output));
            double denseChunked = Time(() => Chunks((a, qs, os) => backend.Attention(a, qs, cache, os)));
            // What an anchor allocates beyond dense attention (cuMemAlloc is synchronous): free memory before its plan and
            // after a layer 0 and an anchor have prefilled the prompt once, at the first context.
            long freeBefore = backend.Device.MemoryInfo().Free;
            using var plan = backend.AllocatePlan(KeyPlan.UnitsFor(Chunk), o.KvHeads, TopKBudget.For(context, topKPercent));
            Chunks((a, qs, os) => backend.AnchorAttention(a, anchor with { DenseOutput = true }, qs, cache, plan, os));
            Chunks((a, qs, os) => backend.AnchorAttention(a, anchor, qs, cache, plan, os));
            long? anchorBytes = rows.Count == 0 ? freeBefore - backend.Device.MemoryInfo().Free : null;
            double layerZero = Time(() => Chunks((a, qs, os) => backend.AnchorAttention(a, anchor with { DenseOutput = true }, qs, cache, plan, os)));
            double anchorMs = Time(() => Chunks((a, qs, os) => backend.AnchorAttention(a, anchor, qs, cache, plan, os)));
            var bf16 = anchor with { Precision = ScorePrecision.Bf16 };
            double layerZeroBf16 = Time(() => Chunks((a, qs, os) => backend.AnchorAttention(a, bf16 with { DenseOutput = true }, qs, cache, plan, os)));
            double anchorBf16 = Time(() => Chunks((a, qs, os) => backend.AnchorAttention(a, bf16, qs, cache, plan, os)));
            var chunkPlans = new KeyPlan[(context + Chunk - 1) / Chunk];
            try
            {
                IndexedChunks((i, a, qs, os) =>
                {
                    chunkPlans[i] = backend.AllocatePlan(KeyPlan.UnitsFor(Chunk), o.KvHeads, TopKBudget.For(context, topKPercent));
                    backend.AnchorAttention(a, anchor, qs, cache, chunkPlans[i], os);
                });
                double reuse = Time(() => IndexedChunks((i, a, qs, os) => backend.SparseAttention(a, chunkPlans[i], identity, qs, cache, os)));
                rows.Add(new KascadePrefillRow(context, dense, denseChunked, layerZero, anchorMs, reuse, anchorBytes, layerZeroBf16, anchorBf16));
            }
            finally
            {
                foreach (var chunkPlan in chunkPlans)
                {
                    chunkPlan?.Dispose();
                }
            }
            onContext?.Invoke(context);
        }
        return rows;
    }

    public static string ToMarkdown(CudaBackend backend, AttentionBenchmarkOptions o, double topKPercent, IReadOnlyList<KascadePrefillRow> rows)
    {
        var sb = new StringBuilder();
        string flush = o.Flush == L2Flush.Read ? "reading" : "writing";
        sb.AppendLine(CultureInfo.InvariantCulture, $"device: {backend.Name}; prefill of one layer, batch 1, {o.Heads} query heads, {o.KvHeads} KV heads, head dim {o.HeadDim}, bf16 KV cache, Top-k {topKPercent}%, Kascade in chunks of {Chunk}; CUDA events, L2 flushed by {flush} {GpuTimer.FlushBytes >> 20} MiB, median of {Math.Max(3, o.Runs / 5)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{KascadeBenchmarkRow.AverageRule}; reuse: each chunk over its own anchor's plan; bf16 scores: layer 0 and the anchors rank keys by the queries' bf16 rounding (--score-precision bf16)");
        sb.AppendLine();
        sb.AppendLine("| context | dense ms (one call) | dense ms (chunks) | layer 0 ms | anchor ms | reuse ms | anchor / dense | per-layer average ms | speedup over dense | anchor extra memory MiB (first context) | layer 0 ms, bf16 scores | anchor ms, bf16 scores | anchor / dense, bf16 scores | speedup over dense, bf16 scores |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Context} | {r.Dense:F3} | {r.DenseChunked:F3} | {r.LayerZero:F3} | {r.Anchor:F3} | {r.Reuse:F3} | {r.Anchor / r.Dense:F2} | {r.Average:F3} | {r.Dense / r.Average:F2}× | {(r.AnchorBytes is { } bytes ? (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) : "—")} | {r.LayerZeroBf16:F3} | {r.AnchorBf16:F3} | {r.AnchorBf16 / r.Dense:F2} | {r.Dense / r.AverageBf16:F2}× |");
        }
        return sb.ToString();
    }
}
