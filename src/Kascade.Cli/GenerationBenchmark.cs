using System.Diagnostics;
using System.Globalization;
using System.Text;
using Kascade.Core;
using Kascade.Runtime;

namespace Kascade.Cli;

/// <param name="Policies">The attention methods timed, each over every context (dense by default).</param>
public sealed record GenerationBenchmarkOptions(IReadOnlyList<int> Contexts, int DecodeTokens, int PrefillChunk, IReadOnlyList<AttentionPolicy>? Policies = null)
{
    public IReadOnlyList<AttentionPolicy> Methods => Policies ?? [AttentionPolicy.Dense];
}

/// <summary>
/// One context length: prefill of a prompt of <c>Context − DecodeTokens</c> tokens, then greedy decode steps
/// (sampled on the backend) that fill the context, so decode is measured at a depth close to <see cref="Context"/>.
/// </summary>
/// <param name="TopKPercent">The method's Top-k budget (dense: 100).</param>
/// <param name="Anchors">A Kascade method's anchor layers (null for the others).</param>
/// <param name="AnchorRefresh">A Kascade method's <see cref="AttentionPolicy.AnchorRefresh"/> (1: every step).</param>
public sealed record GenerationBenchmarkRow(int Context, int PromptTokens, double PrefillSeconds, int DecodeTokens, double DecodeSeconds, string Method = "dense",
    double TopKPercent = 100, int? Anchors = null, int AnchorRefresh = 1)
{
    public double PrefillTokensPerSecond => PromptTokens / PrefillSeconds;

    public double DecodeTokensPerSecond => DecodeTokens / DecodeSeconds;
}

/// <summary>Whole-model prefill and decode speed; a benchmark, run from the CLI, never from tests.</summary>
public static class GenerationBenchmark
{
    /// <summary>
    /// The warm-up's longest prompt: past a few hundred keys (256 for the decode kernel's tiles) a GPU decode step splits
    /// its keys and merges the splits, so every decode kernel is compiled before the timings.
    /// </summary>
    private const int WarmUpPrompt = 1024;

    public static IReadOnlyList<GenerationBenchmarkRow> Run(LlamaModel model, GenerationBenchmarkOptions options, Action<int, int> onPrefill) =>
        [.. options.Methods.SelectMany(policy => Run(model, options, policy, onPrefill))];

    private static IReadOnlyList<GenerationBenchmarkRow> Run(LlamaModel model, GenerationBenchmarkOptions options, AttentionPolicy policy, Action<int, int> onPrefill)
    {
        var config = model.Config;
        var rows = new List<GenerationBenchmarkRow>();
        var rng = new Random(1234);
        var greedy = new SamplingOptions();
        // Warm-up: JIT of the prefill and decode paths, the thread pool and kernel compilation, outside the timings. Its
        // prompt is long enough (up to WarmUpPrompt) for the GPU's decode attention to split its keys. With 48 positions it
        // did not, so the first process on a machine compiled attention_combine (NVRTC; disk-cached for the next process)
        // inside its first timed decode: in session 16 the first build run in a call decoded 2k at 7.7 ms a token where
        // the same build run second gave 5.7.
        int warmPrompt = Math.Clamp(options.Contexts.Min() - options.DecodeTokens, 1, Math.Max(1, Math.Min(WarmUpPrompt, config.MaxPositions - 16)));
        using (var warm = model.CreateSession(warmPrompt + 16, policy: policy))
        {
            warm.Prefill([.. Enumerable.Range(0, warmPrompt).Select(i => 1 + i % (config.VocabSize - 1))], greedy);
            for (int i = 0; i < 16; i++)
            {
                warm.Decode(greedy);
            }
        }
        foreach (int context in options.Contexts)
        {
            int prompt = context - options.DecodeTokens;
            if (context > config.MaxPositions || prompt < 1)
            {
                throw new KascadeException($"context {context} must hold {options.DecodeTokens} decode tokens and fit the model's {config.MaxPositions} positions");
            }
            var ids = Enumerable.Range(0, prompt).Select(_ => rng.Next(config.VocabSize)).ToArray();
            using var session = model.CreateSession(context, options.PrefillChunk, policy);
            var clock = Stopwatch.StartNew();
            session.Prefill(ids, greedy, done => onPrefill(context, done));
            double prefill = clock.Elapsed.TotalSeconds;
            clock.Restart();
            // Each step runs the token the previous one sampled (greedy, on the backend); the first step records the
            // decode step where the backend records (CUDA graphs), and that is timed too.
            for (int i = 0; i < options.DecodeTokens; i++)
            {
                session.Decode(greedy);
            }
            rows.Add(new GenerationBenchmarkRow(context, prompt, prefill, options.DecodeTokens, clock.Elapsed.TotalSeconds, policy.Info.Name,
                policy.Method == AttentionMethod.Dense ? 100 : policy.TopKPercent, policy.Schedule?.Anchors.Count, policy.AnchorRefresh));
        }
        return rows;
    }

    public static string ToMarkdown(string label, LlamaModel model, GenerationBenchmarkOptions options, IReadOnlyList<GenerationBenchmarkRow> rows)
    {
        var c = model.Config;
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"model: {label} ({c.ArchitectureName}, {c.Layers} layers, {c.Heads}/{c.KvHeads} heads, head dim {c.HeadDim}), backend: {model.Backend.Name}, {Environment.ProcessorCount} cores, prefill chunk {options.PrefillChunk}");
        sb.AppendLine();
        sb.AppendLine("| attention | context | prompt tokens | prefill s | prefill tokens/s | decode tokens | decode tokens/s | ms/token |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"| {r.Method}{(r.AnchorRefresh > 1 ? $" (refresh {r.AnchorRefresh})" : "")} | {r.Context} | {r.PromptTokens} | {r.PrefillSeconds:F2} | {r.PrefillTokensPerSecond:F1} | {r.DecodeTokens} | {r.DecodeTokensPerSecond:F1} | {1000 / r.DecodeTokensPerSecond:F1} |");
        }
        return sb.ToString();
    }

    /// <summary>
    /// The rows as JSON (<c>bench generate --json</c>): the model's layers and, per row, the method, its Top-k percent and
    /// anchor count, the context and both speeds.
    /// </summary>
    public static string ToJson(string label, LlamaModel model, IReadOnlyList<GenerationBenchmarkRow> rows)
    {
        var root = new System.Text.Json.Nodes.JsonObject
        {
            ["model"] = label,
            ["layers"] = model.Config.Layers,
            ["backend"] = model.Backend.Name,
            ["rows"] = new System.Text.Json.Nodes.JsonArray([.. rows.Select(r => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
            {
                ["method"] = r.Method,
                ["topk_percent"] = r.TopKPercent,
                ["anchors"] = r.Anchors,
                ["anchor_refresh"] = r.AnchorRefresh,
                ["context"] = r.Context,
                ["prompt_tokens"] = r.PromptTokens,
                ["prefill_seconds"] = r.PrefillSeconds,
                ["decode_tokens"] = r.DecodeTokens,
                ["decode_tokens_per_second"] = r.DecodeTokensPerSecond,
            })]),
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }
}
