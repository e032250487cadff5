using System.Globalization;
using System.Text;
using System.Text.Json;
using ScottPlot;

namespace Kascade.Evaluation;

/// <summary>One task × length × method cell: mean score in percent over its samples, and mean token counts.</summary>
public sealed record EvalCell(string Task, int Length, string Method, int Samples, double Accuracy, double MeanPromptTokens, double MeanGeneratedTokens);

/// <summary>Perplexity of one method at one length: exp(Σ NLL / scored tokens) over its windows.</summary>
public sealed record PerplexityCell(string Method, int Length, int Windows, int Tokens, double Perplexity);

/// <summary>The tables of an evaluation (Markdown, CSV, JSON) and a plot of accuracy against context length per task.</summary>
public sealed class EvalReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private EvalReport(IReadOnlyList<EvalCell> cells, IReadOnlyList<PerplexityCell> perplexity, IReadOnlyList<SampleResult> samples, EvalPlan plan)
    {
        Cells = cells;
        Perplexity = perplexity;
        _samples = samples;
        _plan = plan;
    }

    private readonly IReadOnlyList<SampleResult> _samples;
    private readonly EvalPlan _plan;

    public IReadOnlyList<EvalCell> Cells { get; }

    public IReadOnlyList<PerplexityCell> Perplexity { get; }

    /// <summary>The results of <paramref name="plan"/> held by <paramref name="store"/> (other results there are left out).</summary>
    public static EvalReport From(ResultStore store, EvalPlan plan)
    {
        var samples = new List<SampleResult>();
        var cells = new List<EvalCell>();
        foreach (var task in plan.Tasks)
        {
            foreach (int length in plan.Lengths)
            {
                foreach (var method in plan.Methods)
                {
                    var rows = store.Samples.Where(r => r.Task == task.Name && r.Length == length && r.Method == method.Name && r.Index < plan.SamplesOf(task)).ToList();
                    if (rows.Count == 0)
                    {
                        continue;
                    }
                    samples.AddRange(rows);
                    cells.Add(new EvalCell(task.Name, length, method.Name, rows.Count, 100 * rows.Average(r => r.Score), rows.Average(r => r.PromptTokens), rows.Average(r => r.GeneratedTokens)));
                }
            }
        }
        var perplexity = new List<PerplexityCell>();
        if (plan.Perplexity is { } windows)
        {
            foreach (var method in plan.Methods)
            {
                foreach (int length in windows.Lengths)
                {
                    var rows = store.Perplexity.Where(r => r.Method == method.Name && r.Length == length && r.Window < windows.Windows).ToList();
                    if (rows.Count > 0)
                    {
                        perplexity.Add(new PerplexityCell(method.Name, length, rows.Count, rows.Sum(r => r.Tokens), Math.Exp(rows.Sum(r => r.NegativeLogLikelihood) / rows.Sum(r => r.Tokens))));
                    }
                }
            }
        }
        return new EvalReport(cells, perplexity, samples, plan);
    }

    /// <summary>Writes results.md, results.csv, results.json and accuracy-TASK.png into <paramref name="directory"/>; returns the files written.</summary>
    public IReadOnlyList<string> Write(string directory, string title) => [.. WriteTables(directory, title), .. WritePlots(directory)];

    /// <summary>Writes results.md, results.csv and results.json; returns their paths.</summary>
    public IReadOnlyList<string> WriteTables(string directory, string title) =>
    [
        WriteText(directory, "results.md", ToMarkdown(title)),
        WriteText(directory, "results.csv", ToCsv()),
        WriteText(directory, "results.json", ToJson(title)),
    ];

    /// <summary>Writes accuracy-TASK.png per task (ScottPlot, which needs SkiaSharp's native library); returns their paths.</summary>
    public IReadOnlyList<string> WritePlots(string directory)
    {
        var files = new List<string>();
        foreach (var task in Cells.Select(c => c.Task).Distinct())
        {
            string path = Path.Combine(directory, $"accuracy-{task}.png");
            Plot(task, path);
            files.Add(path);
        }
        return files;
    }

    private static string WriteText(string directory, string name, string text)
    {
        string path = Path.Combine(directory, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>A length as the tables write it: 131072 → 128k, 300 → 300.</summary>
    internal static string Length(int tokens) => tokens % 1024 == 0 ? string.Create(Inv, $"{tokens / 1024}k") : tokens.ToString(Inv);

    public string ToMarkdown(string title)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"# {title}");
        sb.AppendLine();
        var methods = _plan.Methods.Select(m => m.Name).ToList();
        foreach (var task in Cells.Select(c => c.Task).Distinct())
        {
            var lengths = _plan.Lengths.Where(l => Cells.Any(c => c.Task == task && c.Length == l)).ToList();
            sb.AppendLine(Inv, $"## {task}: score (%, mean over samples)");
            sb.AppendLine();
            sb.AppendLine("| method | " + string.Join(" | ", lengths.Select(Length)) + " |");
            sb.AppendLine("|---|" + string.Concat(lengths.Select(_ => "---:|")));
            foreach (var method in methods)
            {
                var row = lengths.Select(l => Cells.FirstOrDefault(c => c.Task == task && c.Length == l && c.Method == method) is { } c ? $"{c.Accuracy:F1} ({c.Samples})" : "-");
                sb.AppendLine(Inv, $"| {method} | {string.Join(" | ", row)} |");
            }
            sb.AppendLine();
            var depths = _samples.Where(s => s.Task == task && s.Depth is not null).Select(s => s.Depth!.Value).Distinct().Order().ToList();
            if (depths.Count > 1)
            {
                sb.AppendLine(Inv, $"{task} by needle depth (0 = start of the prompt, 1 = end), all lengths together:");
                sb.AppendLine();
                sb.AppendLine("| method | " + string.Join(" | ", depths.Select(d => d.ToString("F2", Inv))) + " |");
                sb.AppendLine("|---|" + string.Concat(depths.Select(_ => "---:|")));
                foreach (var method in methods)
                {
                    var row = depths.Select(d => _samples.Where(s => s.Task == task && s.Method == method && s.Depth == d).ToList() is { Count: > 0 } rows ? (100 * rows.Average(r => r.Score)).ToString("F0", Inv) : "-");
                    sb.AppendLine(Inv, $"| {method} | {string.Join(" | ", row)} |");
                }
                sb.AppendLine();
            }
        }
        if (Perplexity.Count > 0)
        {
            var lengths = _plan.Perplexity!.Lengths.Where(l => Perplexity.Any(p => p.Length == l)).ToList();
            var first = Perplexity[0];
            sb.AppendLine(Inv, $"## Perplexity of {_plan.Perplexity!.Source}");
            sb.AppendLine();
            sb.AppendLine(Inv, $"Last {_plan.Perplexity.ScoredTokens} tokens of each of {first.Windows} windows, scored as teacher-forced decode steps.");
            sb.AppendLine();
            sb.AppendLine("| method | " + string.Join(" | ", lengths.Select(Length)) + " |");
            sb.AppendLine("|---|" + string.Concat(lengths.Select(_ => "---:|")));
            foreach (var method in methods)
            {
                var row = lengths.Select(l => Perplexity.FirstOrDefault(p => p.Method == method && p.Length == l) is { } p ? p.Perplexity.ToString("F2", Inv) : "-");
                sb.AppendLine(Inv, $"| {method} | {string.Join(" | ", row)} |");
            }
            sb.AppendLine();
        }
        sb.AppendLine("## All cells");
        sb.AppendLine();
        sb.AppendLine("| task | length | method | samples | score % | mean prompt tokens | mean generated tokens |");
        sb.AppendLine("|---|---:|---|---:|---:|---:|---:|");
        foreach (var c in Cells)
        {
            sb.AppendLine(Inv, $"| {c.Task} | {c.Length} | {c.Method} | {c.Samples} | {c.Accuracy:F1} | {c.MeanPromptTokens:F0} | {c.MeanGeneratedTokens:F1} |");
        }
        return sb.ToString();
    }

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine("kind,task,length,method,samples,score_percent,mean_prompt_tokens,mean_generated_tokens,perplexity");
        foreach (var c in Cells)
        {
            sb.AppendLine(Inv, $"accuracy,{Csv(c.Task)},{c.Length},{Csv(c.Method)},{c.Samples},{c.Accuracy:R},{c.MeanPromptTokens:R},{c.MeanGeneratedTokens:R},");
        }
        foreach (var p in Perplexity)
        {
            sb.AppendLine(Inv, $"perplexity,,{p.Length},{Csv(p.Method)},{p.Windows},,,,{p.Perplexity:R}");
        }
        return sb.ToString();
    }

    private static string Csv(string field) =>
        field.IndexOfAny([',', '"', '\n']) >= 0 ? "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : field;

    public string ToJson(string title)
    {
        var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("title", title);
            w.WriteStartArray("accuracy");
            foreach (var c in Cells)
            {
                w.WriteStartObject();
                w.WriteString("task", c.Task);
                w.WriteNumber("length", c.Length);
                w.WriteString("method", c.Method);
                w.WriteNumber("samples", c.Samples);
                w.WriteNumber("score_percent", c.Accuracy);
                w.WriteNumber("mean_prompt_tokens", c.MeanPromptTokens);
                w.WriteNumber("mean_generated_tokens", c.MeanGeneratedTokens);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("perplexity");
            foreach (var p in Perplexity)
            {
                w.WriteStartObject();
                w.WriteString("method", p.Method);
                w.WriteNumber("length", p.Length);
                w.WriteNumber("windows", p.Windows);
                w.WriteNumber("scored_tokens", p.Tokens);
                w.WriteNumber("perplexity", p.Perplexity);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Score against context length (log₂ axis), one line per method.</summary>
    private void Plot(string task, string path)
    {
        var series = _plan.Methods
            .Select(method => (method.Name, Points: Cells.Where(c => c.Task == task && c.Method == method.Name).OrderBy(c => c.Length).ToList()))
            .Where(m => m.Points.Count > 0)
            .Select(m => (m.Name, m.Points.Select(c => Math.Log2(c.Length)).ToArray(), m.Points.Select(c => c.Accuracy).ToArray()));
        var plot = ScorePlots.Lines(series, markerSize: 7);
        var ticks = _plan.Lengths.Select(l => new Tick(Math.Log2(l), Length(l))).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        ScorePlots.Save(plot, $"{task}: score against context length", "context length (tokens)", "score (%)", path);
    }
}
