using System.Globalization;
using System.Text;
using Kascade.Core;
using Kascade.Cuda;
using Kascade.Cuda.Runtime;

namespace Kascade.Cli;

/// <summary>Shapes of an attention benchmark (the paper's: 32 query heads, 8 KV heads, head dim 128, bf16 cache).</summary>
public sealed record AttentionBenchmarkOptions(string Phase, IReadOnlyList<int> Contexts, int Heads = 32, int KvHeads = 8, int HeadDim = 128, int Runs = 20, int Batch = 1, L2Flush Flush = L2Flush.Read);

/// <summary>One timed case: median milliseconds and what that achieves (GB/s of K+V for decode, TFLOP/s for causal prefill).</summary>
public sealed record AttentionBenchmarkRow(string Phase, int Batch, int Context, double Milliseconds, double Throughput, string Unit);

/// <summary>Our dense attention kernels on the GPU, timed with CUDA events, L2 flushed, median (DESIGN §7).</summary>
public static class AttentionBenchmark
{
    public static IReadOnlyList<AttentionBenchmarkRow> Run(CudaBackend backend, AttentionBenchmarkOptions o, Action<int>? onContext = null)
    {
        var rows = new List<AttentionBenchmarkRow>();
        using var timer = backend.CreateTimer(o.Flush);
        var rng = new Random(3);
        foreach (int context in o.Contexts)
        {
            bool decode = o.Phase == "decode";
            int sequences = decode ? o.Batch : 1;
            using var cache = backend.AllocateKvCache(new KvCacheShape(sequences, o.KvHeads, o.HeadDim, context));
            Fill(backend, cache, sequences, context, rng);
            int tokens = decode ? sequences : context;
            using var q = backend.Upload(RandomValues(rng, tokens * o.Heads * o.HeadDim), tokens, o.Heads * o.HeadDim);
            using var output = backend.Allocate(tokens, o.Heads * o.HeadDim);
            var args = new AttentionArgs(0, tokens, decode ? context - 1 : 0, o.Heads, o.KvHeads, o.HeadDim, 1f / MathF.Sqrt(o.HeadDim));
            Action run = decode ? () => backend.BatchedDecodeAttention(args, q, cache, output) : () => backend.Attention(args, q, cache, output);
            double ms = timer.MedianMilliseconds(run, decode ? o.Runs : Math.Max(3, o.Runs / 5), decode ? 5 : 1);
            rows.Add(decode
                ? new AttentionBenchmarkRow("decode", sequences, context, ms, 2.0 * sequences * context * o.KvHeads * o.HeadDim * 2 / (ms * 1e-3) / 1e9, "GB/s")
                : new AttentionBenchmarkRow("prefill", 1, context, ms, 4.0 * o.Heads * o.HeadDim * context * (double)context / 2 / (ms * 1e-3) / 1e12, "TFLOP/s"));
            onContext?.Invoke(context);
        }
        return rows;
    }

    /// <summary>
    /// Positions <c>[0, context)</c> of the cache's first <paramref name="layers"/> layers (or sequences, for a batched
    /// decode cache) hold one random chunk of 4096 keys and values, repeated, its keys rotated in place by RoPE
    /// (θ = 500,000, Llama 3's) at each copy's positions before they are stored: every key is distinct (rotations
    /// compose, so a copy's angles are the sum of its predecessors'), as a model's are. Without the rotation every score
    /// came context / 4096 times (32-fold ties at 128k), which made a Top-k row unlike any model's (session 21); the
    /// timings of dense kernels do not depend on the values. Each kernel reads its own copy.
    /// </summary>
    internal static void Fill(IBackend backend, KvCache cache, int layers, int context, Random rng)
    {
        var s = cache.Shape;
        int chunk = Math.Min(4096, context), width = s.KvHeads * s.HeadDim;
        backend.SetRope(new RopeConfig(500_000), s.HeadDim, context);
        using var k = backend.Upload(RandomValues(rng, chunk * width), chunk, width);
        using var v = backend.Upload(RandomValues(rng, chunk * width), chunk, width);
        for (int layer = 0; layer < layers; layer++)
        {
            for (int start = 0; start < context; start += chunk)
            {
                int n = Math.Min(chunk, context - start);
                // No query heads: rope_append rotates and stores the keys alone (k stands in for the unused q).
                var keys = k.Take(n);
                backend.RopeAppendKv(new AttentionArgs(layer, n, start, 0, s.KvHeads, s.HeadDim, 1f), keys, keys, v.Take(n), cache);
            }
        }
    }

    internal static float[] RandomValues(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

    /// <param name="copyGBps">The GPU's measured copy bandwidth (<see cref="CudaBackend.CopyBandwidthGBps"/>): decode rows show their fraction of it.</param>
    public static string ToMarkdown(CudaBackend backend, AttentionBenchmarkOptions o, IReadOnlyList<AttentionBenchmarkRow> rows, double copyGBps)
    {
        var sb = new StringBuilder();
        string flush = o.Flush == L2Flush.Read ? "reading" : "writing";
        sb.AppendLine(CultureInfo.InvariantCulture, $"device: {backend.Name}; {o.Heads} query heads, {o.KvHeads} KV heads, head dim {o.HeadDim}, bf16 KV cache; CUDA events, L2 flushed by {flush} {GpuTimer.FlushBytes >> 20} MiB, median");
        if (backend.Tuning is { Decode: not null } or { Prefill: not null } or { Splits: not null })
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"tuning: kernel {(backend.Tuning.Decode ?? backend.Tuning.Prefill)?.ToString() ?? "default"}, splits {backend.Tuning.Splits?.ToString(CultureInfo.InvariantCulture) ?? "heuristic"}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"device copy bandwidth: {copyGBps:F0} GB/s (cuMemcpyDtoDAsync of 1 GiB, bytes read + written)");
        sb.AppendLine();
        sb.AppendLine("| implementation | phase | batch | context | ms | throughput | of copy bandwidth |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            string fraction = r.Unit == "GB/s" ? (r.Throughput / copyGBps).ToString("P0", CultureInfo.InvariantCulture) : "";
            sb.AppendLine(CultureInfo.InvariantCulture, $"| kascade dense | {r.Phase} | {r.Batch} | {r.Context} | {r.Milliseconds:F4} | {r.Throughput:F1} {r.Unit} | {fraction} |");
        }
        return sb.ToString();
    }
}
