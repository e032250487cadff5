using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Kascade.Core;
using Kascade.Runtime.Attention;

namespace Kascade.Cli;

/// <param name="Config">The model shape whose layers, heads and head dimension are timed (no weights are read).</param>
/// <param name="Label">How the tables name the shape.</param>
/// <param name="Policies">The methods and settings, timed one after another in each context; dense first gives every row its speedup.</param>
/// <param name="Runs">Timed cycles per policy and context (median reported), after three untimed ones.</param>
/// <param name="Batch">Sequences decoding together, each with its own cache of the context (above 1: the batched decode ops, every method but oracle-topk).</param>
public sealed record MethodBenchmarkOptions(ModelConfig Config, string Label, IReadOnlyList<int> Contexts, IReadOnlyList<AttentionPolicy> Policies, int Runs = 20, int Batch = 1);

/// <summary>One policy at one context: the median milliseconds of one decode step's attention over every layer (for the whole batch).</summary>
public sealed record MethodBenchmarkRow(AttentionPolicy Policy, int Context, double StepMilliseconds, int Layers)
{
    /// <summary>The per-layer cost: the step over the layer count (what the frontier compares).</summary>
    public double LayerMilliseconds => StepMilliseconds / Layers;

    public string Method => Policy.Info.Name;

    /// <summary>Dense's 100, the sparse methods' Top-k percent (streamingllm's budget is its window).</summary>
    public double TopKPercent => Policy.Method == AttentionMethod.Dense ? 100 : Policy.TopKPercent;

    public int? Anchors => Policy.NeedsSchedule ? Policy.Schedule?.Anchors.Count : null;

    public double? WindowPercent => Policy.Method == AttentionMethod.StreamingLlm ? Policy.Baselines.StreamingWindowPercent : null;

    /// <summary>The setting, as the frontier's table names it.</summary>
    public string Setting => Policy.Method switch
    {
        AttentionMethod.Dense => "",
        AttentionMethod.StreamingLlm => string.Create(CultureInfo.InvariantCulture, $"window {WindowPercent}%"),
        _ when Anchors is { } a => string.Create(CultureInfo.InvariantCulture,
            $"{a} anchors, {TopKPercent}%{(Policy.AnchorRefresh > 1 ? $", refresh {Policy.AnchorRefresh}" : "")}{(Policy.ScorePrecision == ScorePrecision.Bf16 ? ", bf16 scores" : "")}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{TopKPercent}%"),
    };
}

/// <summary>
/// Every attention method's decode-step attention over all layers of a model shape, beside dense in the same run
/// (<c>kascade bench methods</c>): the per-layer cost each method's mix of dense, selecting and reusing layers gives
/// (issue 16 §3's speed side). One random cache of every layer per context (for a batch: of each sequence, which every
/// layer attends over, <see cref="DecodeStepAttention"/>), filled once; each policy's step recorded
/// and replayed as <c>generate</c> runs it (<see cref="DecodeStepAttention"/>); timed with CUDA events and the L2
/// flushed before each cycle on the GPU, with a stopwatch on the CPU; median over cycles (a Kascade policy with an anchor
/// refresh R times cycles of R steps: one that selects and R − 1 that keep the selection).
/// </summary>
public static class MethodBenchmark
{
    public static IReadOnlyList<MethodBenchmarkRow> Run(IBackend backend, MethodBenchmarkOptions o, Action<int, int>? onPolicy = null)
    {
        var c = o.Config;
        var rows = new List<MethodBenchmarkRow>();
        var rng = new Random(3);
        using var timer = backend is Kascade.Cuda.CudaBackend cuda ? cuda.CreateTimer() : null;
        double Median(Action cycle) => timer?.MedianMilliseconds(cycle, o.Runs, 3) ?? StopwatchMedian(backend, cycle, o.Runs);
        int cacheLayers = o.Batch == 1 ? c.Layers : o.Batch, width = c.Heads * c.HeadDim;
        foreach (int context in o.Contexts)
        {
            using var cache = backend.AllocateKvCache(new KvCacheShape(cacheLayers, c.KvHeads, c.HeadDim, context));
            AttentionBenchmark.Fill(backend, cache, cacheLayers, context, rng);
            using var q = backend.Upload(AttentionBenchmark.RandomValues(rng, o.Batch * width), o.Batch, width);
            using var output = backend.Allocate(o.Batch, width);
            for (int i = 0; i < o.Policies.Count; i++)
            {
                using var step = new DecodeStepAttention(backend, o.Policies[i], c, cache, context, q, output, o.Batch);
                double cycle = Median(step.RunCycle);
                rows.Add(new MethodBenchmarkRow(o.Policies[i], context, cycle / step.StepsPerCycle, c.Layers));
                onPolicy?.Invoke(context, i + 1);
            }
        }
        return rows;
    }

    /// <summary>The median wall time of <paramref name="runs"/> cycles, each waited for (a backend without device timers).</summary>
    private static double StopwatchMedian(IBackend backend, Action cycle, int runs)
    {
        using var sink = backend.Allocate(1, 1);
        Span<float> read = stackalloc float[1];
        var times = new double[runs];
        for (int i = -3; i < runs; i++)
        {
            var clock = Stopwatch.StartNew();
            cycle();
            backend.Read(sink, read);   // waits for the queued work
            if (i >= 0)
            {
                times[i] = clock.Elapsed.TotalMilliseconds;
            }
        }
        Array.Sort(times);
        return times[runs / 2];
    }

    public static string ToMarkdown(IBackend backend, MethodBenchmarkOptions o, IReadOnlyList<MethodBenchmarkRow> rows)
    {
        var c = o.Config;
        var sb = new StringBuilder();
        string timing = backend is Kascade.Cuda.CudaBackend ? "CUDA events, L2 flushed before each cycle" : "wall clock";
        sb.AppendLine(CultureInfo.InvariantCulture, $"device: {backend.Name}; {o.Label}: {c.Layers} layers, {c.Heads} query heads, {c.KvHeads} KV heads, head dim {c.HeadDim}, bf16 KV cache (one random 4096-token chunk repeated); decode, batch {o.Batch}{(o.Batch > 1 ? " (every layer attends over the batch's one cache)" : "")}; {timing}, median of {o.Runs} cycles");
        sb.AppendLine("step ms = a cycle's median / its steps (a refresh R cycles R steps: one that selects, R − 1 that keep the selection; 1 otherwise); per-layer ms = step ms / layers; × dense = dense's per-layer ms in the same context / the row's");
        sb.AppendLine();
        sb.AppendLine("| method | setting | context | step ms | per-layer ms | × dense |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            string speedup = DenseOf(rows, r.Context) is { } dense ? $"{dense.LayerMilliseconds / r.LayerMilliseconds:F2}×" : "—";
            sb.AppendLine(CultureInfo.InvariantCulture, $"| {r.Method} | {r.Setting} | {r.Context} | {r.StepMilliseconds:F3} | {r.LayerMilliseconds:F4} | {speedup} |");
        }
        return sb.ToString();
    }

    private static MethodBenchmarkRow? DenseOf(IReadOnlyList<MethodBenchmarkRow> rows, int context) =>
        rows.FirstOrDefault(d => d.Policy.Method == AttentionMethod.Dense && d.Context == context);

    /// <summary>
    /// The rows as JSON (<c>bench methods --json</c>, what <c>kascade frontier</c> reads): the shape's layers and, per
    /// row, the method, its Top-k percent, anchor count, refresh, score precision and window, the context and the step's and a layer's milliseconds.
    /// </summary>
    public static string ToJson(IBackend backend, MethodBenchmarkOptions o, IReadOnlyList<MethodBenchmarkRow> rows)
    {
        var root = new JsonObject
        {
            ["shape"] = o.Label,
            ["layers"] = o.Config.Layers,
            ["backend"] = backend.Name,
            ["batch"] = o.Batch,
            ["rows"] = new JsonArray([.. rows.Select(r => (JsonNode)new JsonObject
            {
                ["method"] = r.Method,
                ["topk_percent"] = r.TopKPercent,
                ["anchors"] = r.Anchors,
                ["anchor_refresh"] = r.Policy.AnchorRefresh,
                ["score_precision"] = r.Policy.ScorePrecision == ScorePrecision.Bf16 ? "bf16" : "exact",
                ["window_percent"] = r.WindowPercent,
                ["context"] = r.Context,
                ["step_ms"] = r.StepMilliseconds,
                ["layer_ms"] = r.LayerMilliseconds,
            })]),
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }
}
