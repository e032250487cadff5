using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Kascade.Core;

namespace Kascade.Evaluation;

/// <summary>Where a frontier's speed is timed: a context, at a decode batch (sequences decoding together).</summary>
public readonly record struct SpeedAt(int Context, int Batch = 1)
{
    /// <summary>As the tables write it: 131072 at batch 1 → 128k; at batch 64 → 128k batch 64.</summary>
    public override string ToString() =>
        Batch == 1 ? EvalReport.Length(Context) : string.Create(CultureInfo.InvariantCulture, $"{EvalReport.Length(Context)} batch {Batch}");
}

/// <summary>
/// One point of an accuracy–speed frontier: one method at one setting, its scores (percent) per (task, length) cell and
/// its decode attention speedup over dense per timed context and batch (a layer's average cost, dense's over its). <paramref name="Anchors"/>: a Kascade method's anchor count on the
/// evaluated model; <paramref name="Window"/>: streamingllm's window percent; <paramref name="Refresh"/>: a Kascade
/// method's anchor refresh (1: every decode step); <paramref name="ReferenceBudget"/>: sized by the official code's
/// budget rule (not timed: bench methods sizes by ours); <paramref name="Objective"/>: what the anchor DP of a Kascade
/// method's schedule maximised; <paramref name="Bf16Scores"/>: anchors scored with the queries' bf16 rounding
/// (<see cref="ScorePrecision.Bf16"/>; timed by <c>bench methods --score-precision bf16</c> rows alone). A missing speed
/// was not timed.
/// </summary>
public sealed record FrontierPoint(string Method, double TopKPercent, int? Anchors, double? Window, IReadOnlyDictionary<(string Task, int Length), double> Scores,
    double? Perplexity, IReadOnlyDictionary<SpeedAt, double> Speedup, int Refresh = 1, bool ReferenceBudget = false, AnchorObjective Objective = AnchorObjective.Weighted,
    bool Bf16Scores = false)
{
    /// <summary>A point's setting, as the tables name it.</summary>
    public string Setting => Method switch
    {
        "dense" => "",
        _ when Anchors is { } k => string.Create(CultureInfo.InvariantCulture, $"K = {k}{ObjectiveSuffix}, {TopKPercent}%{(Refresh > 1 ? $", refresh {Refresh}" : "")}{(ReferenceBudget ? ", reference budget" : "")}{(Bf16Scores ? ", bf16 scores" : "")}"),
        "streamingllm" => string.Create(CultureInfo.InvariantCulture, $"window {WindowPercent}%"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{TopKPercent}%"),
    };

    /// <summary>How the setting names a schedule's DP objective: nothing for the paper's, " (log DP)" for ours.</summary>
    public string ObjectiveSuffix => Objective == AnchorObjective.Weighted ? "" : $" ({Objective.Name()} DP)";

    /// <summary>streamingllm's window in percent of the keys (its default where the eval did not name one).</summary>
    public double WindowPercent => Window ?? BaselineOptions.Default.StreamingWindowPercent;

    /// <summary>The mean score over every cell.</summary>
    public double MeanScore => Scores.Count == 0 ? double.NaN : Scores.Values.Average();
}

/// <summary>
/// Issue 16 §3's accuracy–speed frontier from <c>kascade eval</c> result directories (accuracy and perplexity of each
/// method and setting, <c>bench/frontier/run-evals.sh</c>) and <c>bench methods --json</c> files (each method's decode
/// attention over every layer at the paper's shapes beside dense in the same run, <c>bench/frontier/run-speed.sh</c>):
/// a point's speedup is dense's per-layer cost over its own, issue 16 §3's "kernels' measured per-layer cost with the
/// schedule's mix of dense, anchor and reuse layers". A Kascade point takes the timing of its method at its anchor
/// count scaled to the timed model's layers (K of N layers → round(K · L / N) of L, spread over them), Top-k and
/// refresh; streamingllm the timing of its window; the others that of their Top-k.
/// </summary>
public static class Frontier
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;


    /// <summary>A task's mean score (over its lengths) at which a method "passes" it: the rule of "within 1 point of dense on every task dense passes".</summary>
    public const double PassingScore = 90;

    /// <summary>
    /// The points of every eval directory directly under <paramref name="evals"/> (each holding results.json and run.json)
    /// for a model of <paramref name="modelLayers"/> layers, timed by the <c>bench methods --json</c> files in
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
            throw new KascadeException($"speed directory (bench methods --json files) not found: {speeds}");
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
            bool bf16Scores = description.Contains(" scores Bf16", StringComparison.Ordinal);
            var objective = AnchorObjectives.Parse(Regex.Match(description, @" objective (\w+)").Groups[1].Value) ?? AnchorObjective.Weighted;
            var point = new FrontierPoint(method, method == "dense" ? 100 : topK, anchors, window, scores, perplexity is > 0 ? perplexity : null, new Dictionary<SpeedAt, double>(), refresh, referenceBudget, objective, bf16Scores);
            points.Add(point with { Speedup = referenceBudget ? new Dictionary<SpeedAt, double>() : SpeedupOf(point, timings, modelLayers) });
        }
        return points;
    }

    private static double? Number(string text, string pattern) =>
        Regex.Match(text, pattern) is { Success: true } m ? double.Parse(m.Groups[1].Value, Inv) : null;

    /// <param name="LayerMilliseconds">One decode step's attention over every layer, per layer.</param>
    /// <param name="Bf16Scores">Timed with <see cref="ScorePrecision.Bf16"/> anchors (files that name no precision timed exact ones).</param>
    private sealed record Timing(string Method, double TopKPercent, int? Anchors, int Refresh, double? WindowPercent, int Context, double LayerMilliseconds, bool Bf16Scores);

    /// <param name="Batch">The file's decode batch (bench methods --batch; 1 in files that name none).</param>
    private sealed record SpeedFile(int Layers, int Batch, IReadOnlyList<Timing> Rows);

    private static SpeedFile ReadSpeeds(string path)
    {
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path))!;
            return new SpeedFile(root["layers"]!.GetValue<int>(), root["batch"]?.GetValue<int>() ?? 1, [.. root["rows"]!.AsArray().Select(r => new Timing(
                r!["method"]!.GetValue<string>(), r["topk_percent"]!.GetValue<double>(), r["anchors"]?.GetValue<int>(), r["anchor_refresh"]?.GetValue<int>() ?? 1,
                r["window_percent"]?.GetValue<double>(), r["context"]!.GetValue<int>(), r["layer_ms"]!.GetValue<double>(),
                r["score_precision"]?.GetValue<string>() == "bf16"))]);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new KascadeException($"{path} is not a bench methods --json file: {e.Message}");
        }
    }

    /// <summary>Decode attention speedup over dense (same file) per context and batch for the timing that matches the point; none where none does.</summary>
    private static Dictionary<SpeedAt, double> SpeedupOf(FrontierPoint point, IReadOnlyList<SpeedFile> files, int modelLayers)
    {
        var speedup = new Dictionary<SpeedAt, double>();
        if (point.Method == "dense")
        {
            foreach (var at in files.SelectMany(f => f.Rows.Select(r => new SpeedAt(r.Context, f.Batch))).Distinct())
            {
                speedup[at] = 1;
            }
            return speedup;
        }
        bool kascade = point.Anchors is not null;
        foreach (var file in files)
        {
            int? scaled = point.Anchors is { } k ? (int)Math.Round((double)k * file.Layers / modelLayers, MidpointRounding.AwayFromZero) : null;
            foreach (var row in file.Rows)
            {
                bool match = row.Method == point.Method && (kascade
                    ? row.Anchors == scaled && row.TopKPercent == point.TopKPercent && row.Refresh == point.Refresh && row.Bf16Scores == point.Bf16Scores
                    : point.Method == "streamingllm" ? row.WindowPercent == point.WindowPercent : row.TopKPercent == point.TopKPercent);
                if (match && file.Rows.FirstOrDefault(d => d.Method == "dense" && d.Context == row.Context) is { } dense)
                {
                    speedup[new SpeedAt(row.Context, file.Batch)] = dense.LayerMilliseconds / row.LayerMilliseconds;
                }
            }
        }
        return speedup;
    }

    /// <summary>A point's mean score per task, over the task's lengths.</summary>
    public static IReadOnlyDictionary<string, double> TaskScores(FrontierPoint point) =>
        point.Scores.GroupBy(c => c.Key.Task).ToDictionary(g => g.Key, g => g.Average(c => c.Value));

    /// <summary>
    /// How far <paramref name="candidate"/> falls below <paramref name="reference"/> at most, in points of a task's mean
    /// score, over the tasks the reference passes (<see cref="PassingScore"/>); a task the candidate lacks counts in
    /// full. Null when the reference passes none.
    /// </summary>
    public static double? Shortfall(FrontierPoint candidate, FrontierPoint reference)
    {
        var passed = TaskScores(reference).Where(t => t.Value >= PassingScore).ToList();
        if (passed.Count == 0)
        {
            return null;
        }
        var own = TaskScores(candidate);
        return passed.Max(t => t.Value - own.GetValueOrDefault(t.Key));
    }

    /// <summary>
    /// The fewest-anchor point of <paramref name="method"/> (selecting every decode step; at <paramref name="topK"/> percent
    /// where given) within 1 point of <paramref name="reference"/> on every task the reference passes, or null where none is.
    /// </summary>
    public static FrontierPoint? FewestAnchorsNear(IReadOnlyList<FrontierPoint> points, FrontierPoint reference, string method = "kascade", double? topK = null) =>
        Candidates(points, method, topK).Where(p => Shortfall(p, reference) <= 1).OrderBy(p => p.Anchors).ThenBy(p => p.TopKPercent).FirstOrDefault();

    /// <summary><see cref="FewestAnchorsNear"/> dense (issue 16 §3's rule), or null where there is no dense point or none is near it.</summary>
    public static FrontierPoint? FewestAnchorsNearDense(IReadOnlyList<FrontierPoint> points, string method = "kascade") =>
        points.FirstOrDefault(p => p.Method == "dense") is { } dense ? FewestAnchorsNear(points, dense, method) : null;

    private static IEnumerable<FrontierPoint> Candidates(IReadOnlyList<FrontierPoint> points, string method, double? topK) =>
        points.Where(p => p.Method == method && p.Anchors is not null && p.Refresh == 1 && !p.ReferenceBudget && !p.Bf16Scores && (topK is null || p.TopKPercent == topK));

    /// <summary>The table, the best point at each timed speed and the fewest anchors near dense, in Markdown.</summary>
    public static string ToMarkdown(IReadOnlyList<FrontierPoint> points, SpeedAt context)
    {
        var tasks = points.SelectMany(p => p.Scores.Keys).Select(k => k.Task).Distinct().ToList();
        var contexts = points.SelectMany(p => p.Speedup.Keys).Distinct().OrderBy(c => c.Batch).ThenBy(c => c.Context).ToList();
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"Scores in percent (mean over each task's lengths), perplexity at the eval's longest perplexity length, decode attention speedup over dense (per-layer cost in the same timed run; —: not timed).");
        sb.AppendLine();
        sb.Append("| method | setting |");
        foreach (string task in tasks)
        {
            sb.Append(Inv, $" {task} |");
        }
        sb.Append(" mean | perplexity |");
        foreach (var c in contexts)
        {
            sb.Append(Inv, $" speedup {c} |");
        }
        sb.AppendLine();
        sb.AppendLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", tasks.Count + 2 + contexts.Count)));
        foreach (var p in points.OrderBy(p => p.Method == "dense" ? 0 : 1).ThenBy(p => p.Method, StringComparer.Ordinal).ThenBy(p => p.Anchors ?? 0).ThenBy(p => p.Objective).ThenBy(p => p.TopKPercent).ThenBy(p => p.Refresh).ThenBy(p => p.Bf16Scores).ThenBy(p => p.Window ?? 0))
        {
            sb.Append(Inv, $"| {p.Method} | {p.Setting} |");
            foreach (string task in tasks)
            {
                var cells = p.Scores.Where(c => c.Key.Task == task).Select(c => c.Value).ToList();
                sb.Append(cells.Count == 0 ? " — |" : string.Create(Inv, $" {cells.Average():F1} |"));
            }
            sb.Append(Inv, $" {p.MeanScore:F1} | {(p.Perplexity is { } ppl ? ppl.ToString("F2", Inv) : "—")} |");
            foreach (var c in contexts)
            {
                sb.Append(p.Speedup.TryGetValue(c, out double s) ? string.Create(Inv, $" {s:F2}× |") : " — |");
            }
            sb.AppendLine();
        }
        sb.AppendLine();
        sb.AppendLine(Inv, $"The frontier at {context}: each timed point no other point beats in both speed and mean score, slowest first:");
        sb.AppendLine();
        foreach (var p in ParetoFront(points, context))
        {
            sb.AppendLine(Inv, $"- {p.Speedup[context]:F2}×: {Name(p)} (mean {p.MeanScore:F1})");
        }
        sb.AppendLine();
        var dense = points.FirstOrDefault(p => p.Method == "dense");
        if (dense is null || Shortfall(dense, dense) is null)
        {
            sb.AppendLine(Inv, $"Dense passes no task (mean score {PassingScore} or more) or was not evaluated: no anchor count to recommend by it.");
            return sb.ToString();
        }
        string passedTasks = string.Join(", ", TaskScores(dense).Where(t => t.Value >= PassingScore).Select(t => t.Key));
        string Speed(FrontierPoint p) => p.Speedup.TryGetValue(context, out double f) ? f.ToString("F2", Inv) + "× dense" : "not timed";
        if (FewestAnchorsNearDense(points) is { } fewest)
        {
            sb.AppendLine(Inv, $"Fewest anchors within 1 point of dense on every task dense passes ({passedTasks}): **K = {fewest.Anchors}{fewest.ObjectiveSuffix} at {fewest.TopKPercent}%** ({Speed(fewest)} at {context}).");
        }
        else if (Candidates(points, "kascade", null).MinBy(p => (Shortfall(p, dense)!.Value, p.Anchors ?? 0)) is { } closest)
        {
            sb.AppendLine(Inv, $"No Kascade point is within 1 point of dense on every task dense passes ({passedTasks}); the closest with the fewest anchors: K = {closest.Anchors}{closest.ObjectiveSuffix} at {closest.TopKPercent}%, {Shortfall(closest, dense):F1} points below dense at most ({Speed(closest)} at {context}).");
        }
        else
        {
            sb.AppendLine("No Kascade point (selecting every decode step) was evaluated: no anchor count to recommend.");
        }
        // The anchors' share of the gap apart from the selection's own (pooled tiles, a Top-k): each budget's nearest to Kascade with every layer an anchor.
        foreach (var budget in Candidates(points, "kascade", null).GroupBy(p => p.TopKPercent).OrderBy(g => g.Key))
        {
            var all = budget.MaxBy(p => p.Anchors)!;
            if (Shortfall(all, all) is not null && FewestAnchorsNear(points, all, "kascade", budget.Key) is { } near)
            {
                sb.AppendLine(Inv, $"At {budget.Key}%: fewest anchors within 1 point of Kascade with the most anchors (K = {all.Anchors}, {Math.Max(0, Shortfall(all, dense)!.Value):F1} points below dense at most) on every task it passes: K = {near.Anchors}{near.ObjectiveSuffix} ({Speed(near)} at {context}).");
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// The timed points at <paramref name="context"/> that no other point matches or beats in both speedup and mean score
    /// (the faster of two equal scores, the first of exact duplicates), slowest first.
    /// </summary>
    public static IReadOnlyList<FrontierPoint> ParetoFront(IReadOnlyList<FrontierPoint> points, SpeedAt context)
    {
        var front = new List<FrontierPoint>();
        double best = double.NegativeInfinity;
        foreach (var p in points.Where(p => p.Speedup.ContainsKey(context)).OrderByDescending(p => p.Speedup[context]).ThenByDescending(p => p.MeanScore))
        {
            if (p.MeanScore > best)
            {
                front.Add(p);
                best = p.MeanScore;
            }
        }
        front.Reverse();
        return front;
    }

    private static string Name(FrontierPoint p) => p.Setting.Length == 0 ? p.Method : $"{p.Method} {p.Setting}";

    /// <summary>
    /// Mean score against decode attention speedup at <paramref name="context"/>: a point per method × setting, a line
    /// per method (per method and budget for the Kascade methods, through their anchor counts; per anchor count for
    /// their refresh points, through R).
    /// </summary>
    public static void Plot(IReadOnlyList<FrontierPoint> points, SpeedAt context, string path)
    {
        static string Line(FrontierPoint p) => p.Anchors is not { } k ? p.Method
            : p.Refresh > 1 ? string.Create(Inv, $"{p.Method} K = {k}, {p.TopKPercent}%, refresh")
            : string.Create(Inv, $"{p.Method} {p.TopKPercent}%{p.ObjectiveSuffix}{(p.Bf16Scores ? ", bf16 scores" : "")}");
        var series = points.Where(p => p.Speedup.ContainsKey(context)).GroupBy(Line).OrderBy(g => g.Key, StringComparer.Ordinal).Select(line =>
        {
            var ordered = line.OrderBy(p => p.Speedup[context]).ToList();
            return (line.Key, ordered.Select(p => p.Speedup[context]).ToArray(), ordered.Select(p => p.MeanScore).ToArray());
        });
        ScorePlots.Save(ScorePlots.Lines(series, markerSize: 8), $"Accuracy against decode attention speedup over dense at {context}", "decode attention speedup over dense (per-layer cost, same run)", "mean score (%)", path, legendOutside: true);
    }
}
