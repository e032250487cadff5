using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Kascade.Core;

namespace Kascade.Evaluation;

/// <summary>
/// One point of an accuracy–speed frontier: one method at one setting, its scores (percent) per (task, length) cell and
/// its decode speedup over dense per context. <paramref name="Anchors"/>: a Kascade method's anchor count on the
/// evaluated model; <paramref name="Window"/>: streamingllm's window percent; <paramref name="Refresh"/>: a Kascade
/// method's anchor refresh (1: every decode step); <paramref name="ReferenceBudget"/>: sized by the official code's
/// budget rule (not timed: bench generate sizes by ours). A missing speed was not timed.
/// </summary>
public sealed record FrontierPoint(string Method, double TopKPercent, int? Anchors, double? Window, IReadOnlyDictionary<(string Task, int Length), double> Scores,
    double? Perplexity, IReadOnlyDictionary<int, double> Speedup, int Refresh = 1, bool ReferenceBudget = false)
{
    /// <summary>A point's setting, as the tables name it.</summary>
    public string Setting => Method switch
    {
        "dense" => "",
        _ when Anchors is { } k => string.Create(CultureInfo.InvariantCulture, $"K = {k}, {TopKPercent}%{(Refresh > 1 ? $", refresh {Refresh}" : "")}{(ReferenceBudget ? ", reference budget" : "")}"),
        "streamingllm" => string.Create(CultureInfo.InvariantCulture, $"window {Window ?? 30}%"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{TopKPercent}%"),
    };

    /// <summary>The mean score over every cell.</summary>
    public double MeanScore => Scores.Count == 0 ? double.NaN : Scores.Values.Average();
}

/// <summary>
/// Issue 16 §3's accuracy–speed frontier from <c>kascade eval</c> result directories (accuracy and perplexity of each
/// method and setting, <c>bench/frontier/run-evals.sh</c>) and <c>bench generate --json</c> files (decode speed at the
/// paper's shapes beside dense in the same run, <c>bench/frontier/run-speed.sh</c>). A Kascade point's speed is the
/// speed of its anchor count scaled to the timed model's layers (K of N layers → round(K · L / N) of L); the Kascade
/// variants take kascade's (the same kernels); streamingllm's speed is its default window's; the oracle is not timed.
/// </summary>
public static class Frontier
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>A cell dense "passes": the rule of "within 1 point of dense on every task dense passes".</summary>
    public const double PassingScore = 90;

    /// <summary>
    /// The points of every eval directory directly under <paramref name="evals"/> (each holding results.json and run.json)
    /// for a model of <paramref name="modelLayers"/> layers, timed by the <c>bench generate --json</c> files in
    /// <paramref name="speeds"/>.
    /// </summary>
    public static IReadOnlyList<FrontierPoint> Load(string evals, string speeds, int modelLayers)
    {
        if (!Directory.Exists(evals))
        {
            throw new KascadeException($"eval results directory not found: {evals}");
        }
        if (!Directory.Exists(speeds))
        {
            throw new KascadeException($"speed directory (bench generate --json files) not found: {speeds}");
        }
        var timings = Directory.GetFiles(speeds, "*.json").Select(ReadSpeeds).ToList();
        var points = new List<FrontierPoint>();
        foreach (string dir in Directory.GetDirectories(evals).Order(StringComparer.Ordinal))
        {
            string results = Path.Combine(dir, "results.json"), run = Path.Combine(dir, "run.json");
            if (!File.Exists(results) || !File.Exists(run))
            {
                continue;
            }
            try
            {
                points.AddRange(ReadEval(results, run, timings, modelLayers));
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException or FormatException or KeyNotFoundException)
            {
                // A job cut off by its time limit can leave a half-written file: name it, and rerun that job.
                throw new KascadeException($"{dir} does not hold a complete kascade eval result ({e.Message}); rerun its eval to finish it");
            }
        }
        return points;
    }

    /// <summary>The points of one eval directory: a point per method of its run.</summary>
    private static List<FrontierPoint> ReadEval(string results, string run, IReadOnlyList<SpeedFile> timings, int modelLayers)
    {
        var points = new List<FrontierPoint>();
        var identity = JsonNode.Parse(File.ReadAllText(run))!["identity"]!.AsObject();
        var report = JsonNode.Parse(File.ReadAllText(results))!;
        foreach (var (key, value) in identity)
        {
            if (!key.StartsWith("method ", StringComparison.Ordinal))
            {
                continue;
            }
            string method = key["method ".Length..];
            string description = value?.GetValue<string>() ?? "";
            var scores = report["accuracy"]!.AsArray()
                .Where(c => c!["method"]!.GetValue<string>() == method)
                .ToDictionary(c => (c!["task"]!.GetValue<string>(), c["length"]!.GetValue<int>()), c => c!["score_percent"]!.GetValue<double>());
            double? perplexity = report["perplexity"]?.AsArray().Where(p => p!["method"]!.GetValue<string>() == method).Select(p => p!["perplexity"]!.GetValue<double>()).FirstOrDefault();
            double topK = Number(description, @"top-k ([0-9.]+)%") ?? 100;
            int? anchors = Regex.Match(description, @" anchors ([0-9,]+)") is { Success: true } m ? m.Groups[1].Value.Split(',').Length : null;
            double? window = method == "streamingllm" ? Number(description, @"streaming-window-percent=([0-9.]+)") : null;
            int refresh = (int)(Number(description, @" refresh ([0-9]+)") ?? 1);
            bool referenceBudget = description.Contains(" budget Reference", StringComparison.Ordinal);
            var point = new FrontierPoint(method, method == "dense" ? 100 : topK, anchors, window, scores, perplexity is > 0 ? perplexity : null, new Dictionary<int, double>(), refresh, referenceBudget);
            points.Add(point with { Speedup = referenceBudget ? new Dictionary<int, double>() : SpeedupOf(point, timings, modelLayers) });
        }
        return points;
    }

    private static double? Number(string text, string pattern) =>
        Regex.Match(text, pattern) is { Success: true } m ? double.Parse(m.Groups[1].Value, Inv) : null;

    private sealed record Timing(string Method, double TopKPercent, int? Anchors, int Refresh, int Context, double TokensPerSecond);

    private sealed record SpeedFile(int Layers, IReadOnlyList<Timing> Rows);

    private static SpeedFile ReadSpeeds(string path)
    {
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path))!;
            return new SpeedFile(root["layers"]!.GetValue<int>(), [.. root["rows"]!.AsArray().Select(r => new Timing(
                r!["method"]!.GetValue<string>(), r["topk_percent"]!.GetValue<double>(), r["anchors"]?.GetValue<int>(), r["anchor_refresh"]?.GetValue<int>() ?? 1, r["context"]!.GetValue<int>(),
                r["decode_tokens_per_second"]!.GetValue<double>()))]);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new KascadeException($"{path} is not a bench generate --json file: {e.Message}");
        }
    }

    /// <summary>Decode speedup over dense (same file) per context for the timing that matches the point; none where none does.</summary>
    private static Dictionary<int, double> SpeedupOf(FrontierPoint point, IReadOnlyList<SpeedFile> files, int modelLayers)
    {
        var speedup = new Dictionary<int, double>();
        if (point.Method == "dense")
        {
            foreach (int context in files.SelectMany(f => f.Rows).Select(r => r.Context).Distinct())
            {
                speedup[context] = 1;
            }
            return speedup;
        }
        bool kascade = point.Anchors is not null;
        if (point.Method == "oracle-topk" || (point.Method == "streamingllm" && point.Window is not (null or 30)))
        {
            return speedup;
        }
        foreach (var file in files)
        {
            int? scaled = point.Anchors is { } k ? (int)Math.Round((double)k * file.Layers / modelLayers, MidpointRounding.AwayFromZero) : null;
            foreach (var row in file.Rows)
            {
                bool match = kascade
                    ? row.Method == "kascade" && row.Anchors == scaled && row.TopKPercent == point.TopKPercent && row.Refresh == point.Refresh
                    : row.Method == point.Method && (point.Method == "streamingllm" || row.TopKPercent == point.TopKPercent);
                if (match && file.Rows.FirstOrDefault(d => d.Method == "dense" && d.Context == row.Context) is { } dense)
                {
                    speedup[row.Context] = row.TokensPerSecond / dense.TokensPerSecond;
                }
            }
        }
        return speedup;
    }

    /// <summary>
    /// The fewest-anchor Kascade point (of <paramref name="method"/>, selecting every decode step) within 1 point of dense on every cell dense passes
    /// (scores at least <see cref="PassingScore"/>), or null where none is.
    /// </summary>
    public static FrontierPoint? FewestAnchorsNearDense(IReadOnlyList<FrontierPoint> points, string method = "kascade")
    {
        var dense = points.FirstOrDefault(p => p.Method == "dense");
        if (dense is null)
        {
            return null;
        }
        var passed = dense.Scores.Where(c => c.Value >= PassingScore).ToList();
        if (passed.Count == 0)
        {
            return null;
        }
        return points.Where(p => p.Method == method && p.Anchors is not null && p.Refresh == 1)
            .Where(p => passed.All(c => p.Scores.TryGetValue(c.Key, out double s) && s >= c.Value - 1))
            .OrderBy(p => p.Anchors).ThenBy(p => p.TopKPercent).FirstOrDefault();
    }

    /// <summary>The table, the best point at each timed speed and the fewest anchors near dense, in Markdown.</summary>
    public static string ToMarkdown(IReadOnlyList<FrontierPoint> points, int context)
    {
        var tasks = points.SelectMany(p => p.Scores.Keys).Select(k => k.Task).Distinct().ToList();
        var contexts = points.SelectMany(p => p.Speedup.Keys).Distinct().Order().ToList();
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"Scores in percent (mean over each task's lengths), perplexity at the eval's longest perplexity length, decode speedup over dense in the same timed run (—: not timed).");
        sb.AppendLine();
        sb.Append("| method | setting |");
        foreach (string task in tasks)
        {
            sb.Append(Inv, $" {task} |");
        }
        sb.Append(" mean | perplexity |");
        foreach (int c in contexts)
        {
            sb.Append(Inv, $" speedup {Tokens(c)} |");
        }
        sb.AppendLine();
        sb.AppendLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", tasks.Count + 2 + contexts.Count)));
        foreach (var p in points.OrderBy(p => p.Method == "dense" ? 0 : 1).ThenBy(p => p.Method, StringComparer.Ordinal).ThenBy(p => p.Anchors ?? 0).ThenBy(p => p.TopKPercent).ThenBy(p => p.Refresh).ThenBy(p => p.Window ?? 0))
        {
            sb.Append(Inv, $"| {p.Method} | {p.Setting} |");
            foreach (string task in tasks)
            {
                var cells = p.Scores.Where(c => c.Key.Task == task).Select(c => c.Value).ToList();
                sb.Append(cells.Count == 0 ? " — |" : string.Create(Inv, $" {cells.Average():F1} |"));
            }
            sb.Append(Inv, $" {p.MeanScore:F1} | {(p.Perplexity is { } ppl ? ppl.ToString("F2", Inv) : "—")} |");
            foreach (int c in contexts)
            {
                sb.Append(p.Speedup.TryGetValue(c, out double s) ? string.Create(Inv, $" {s:F2}× |") : " — |");
            }
            sb.AppendLine();
        }
        sb.AppendLine();
        sb.AppendLine(Inv, $"Best mean score at or above each timed speed ({Tokens(context)}):");
        sb.AppendLine();
        var timed = points.Where(p => p.Speedup.ContainsKey(context)).ToList();
        foreach (double speed in timed.Select(p => p.Speedup[context]).Distinct().Order())
        {
            var best = timed.Where(p => p.Speedup[context] >= speed - 1e-9).MaxBy(p => p.MeanScore)!;
            sb.AppendLine(Inv, $"- ≥ {speed:F2}×: {Name(best)} ({best.MeanScore:F1})");
        }
        sb.AppendLine();
        var fewest = FewestAnchorsNearDense(points);
        bool densePasses = points.FirstOrDefault(p => p.Method == "dense")?.Scores.Values.Any(v => v >= PassingScore) == true;
        sb.AppendLine(!densePasses
            ? $"Dense scores {PassingScore} or more on no cell (or was not evaluated): no anchor count to recommend by it."
            : fewest is null
            ? $"No Kascade point is within 1 point of dense on every cell dense scores {PassingScore} or more on."
            : string.Create(Inv, $"Fewest anchors within 1 point of dense on every cell dense scores {PassingScore} or more on: K = {fewest.Anchors} at {fewest.TopKPercent}% (decode speedup {(fewest.Speedup.TryGetValue(context, out double f) ? f.ToString("F2", Inv) + "×" : "not timed")} at {Tokens(context)})."));
        return sb.ToString();
    }

    private static string Name(FrontierPoint p) => p.Setting.Length == 0 ? p.Method : $"{p.Method} {p.Setting}";

    /// <summary>A context as the tables write it: 131072 → 128k, 300 → 300.</summary>
    private static string Tokens(int context) => context % 1024 == 0 ? string.Create(Inv, $"{context / 1024}k") : context.ToString(Inv);

    /// <summary>Mean score against decode speedup at <paramref name="context"/>: a point per method × setting, a line per method.</summary>
    public static void Plot(IReadOnlyList<FrontierPoint> points, int context, string path)
    {
        var series = points.Where(p => p.Speedup.ContainsKey(context)).GroupBy(p => p.Method).OrderBy(g => g.Key, StringComparer.Ordinal).Select(method =>
        {
            var ordered = method.OrderBy(p => p.Speedup[context]).ToList();
            return (method.Key, ordered.Select(p => p.Speedup[context]).ToArray(), ordered.Select(p => p.MeanScore).ToArray());
        });
        ScorePlots.Save(ScorePlots.Lines(series, markerSize: 8), $"Accuracy against decode speedup over dense at {Tokens(context)}", "decode speedup over dense (same run)", "mean score (%)", path);
    }
}
