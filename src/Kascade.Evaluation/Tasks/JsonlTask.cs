using System.Text.Json;
using Kascade.Core;
using Kascade.Evaluation.Metrics;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation.Tasks;

/// <summary>
/// Prompts read from a JSONL file, one object a line: <c>{"id", "prompt", "answers"}</c>, optionally <c>"task"</c>,
/// <c>"metric"</c> (a <see cref="Scoring.Names"/> name), <c>"all_classes"</c> and <c>"max_new_tokens"</c>.
/// <c>answers</c> is a list of strings or LongBench's <c>{"answers": [...], "all_classes": [...]}</c>. Without a
/// metric, a LongBench task name (the <c>task</c> field or the file name) picks LongBench's metric and answer
/// length; anything else is scored by <see cref="MetricKind.Contains"/>. A prompt longer than the context is cut in
/// the middle, keeping its head and tail, as LongBench does.
/// </summary>
public sealed class JsonlTask : IEvalTask
{
    /// <summary>LongBench's per-dataset metric, answer length (dataset2maxlen) and first-line scoring (THUDM/LongBench).</summary>
    private static readonly Dictionary<string, (MetricKind Metric, int MaxNewTokens, bool FirstLine)> LongBench = new(StringComparer.Ordinal)
    {
        ["narrativeqa"] = (MetricKind.QaF1, 128, false),
        ["qasper"] = (MetricKind.QaF1, 128, false),
        ["multifieldqa_en"] = (MetricKind.QaF1, 64, false),
        ["multifieldqa_zh"] = (MetricKind.QaF1Zh, 64, false),
        ["hotpotqa"] = (MetricKind.QaF1, 32, false),
        ["2wikimqa"] = (MetricKind.QaF1, 32, false),
        ["musique"] = (MetricKind.QaF1, 32, false),
        ["dureader"] = (MetricKind.RougeLZh, 128, false),
        ["gov_report"] = (MetricKind.RougeL, 512, false),
        ["qmsum"] = (MetricKind.RougeL, 512, false),
        ["multi_news"] = (MetricKind.RougeL, 512, false),
        ["vcsum"] = (MetricKind.RougeLZh, 512, false),
        ["trec"] = (MetricKind.Classification, 64, true),
        ["triviaqa"] = (MetricKind.QaF1, 32, true),
        ["samsum"] = (MetricKind.RougeL, 128, true),
        ["lsht"] = (MetricKind.Classification, 64, true),
        ["passage_count"] = (MetricKind.Count, 32, false),
        ["passage_retrieval_en"] = (MetricKind.Retrieval, 32, false),
        ["passage_retrieval_zh"] = (MetricKind.RetrievalZh, 32, false),
        ["lcc"] = (MetricKind.CodeSim, 64, false),
        ["repobench-p"] = (MetricKind.CodeSim, 64, false),
    };

    /// <summary>Completion tokens for a generic task with no budget of its own.</summary>
    public const int DefaultMaxNewTokens = 32;

    private readonly IReadOnlyList<Line> _lines;
    private readonly int? _maxNewTokens;

    private sealed record Line(string Id, string Prompt, string[] Answers, MetricKind Metric, int MaxNewTokens, string[]? Classes, bool FirstLine);

    private JsonlTask(string name, IReadOnlyList<Line> lines, int? maxNewTokens)
    {
        Name = name;
        _lines = lines;
        _maxNewTokens = maxNewTokens;
    }

    public string Name { get; }

    public int? Available => _lines.Count;

    /// <summary>The tasks of a .jsonl file, or of every .jsonl file in a directory (in name order).</summary>
    public static IReadOnlyList<JsonlTask> LoadAll(string path, int? maxNewTokens = null)
    {
        if (Directory.Exists(path))
        {
            var files = Directory.GetFiles(path, "*.jsonl").Order(StringComparer.Ordinal).ToArray();
            return files.Length > 0 ? [.. files.Select(f => Load(f, maxNewTokens))] : throw new KascadeException($"no .jsonl files in {path}");
        }
        return [Load(path, maxNewTokens)];
    }

    public static JsonlTask Load(string path, int? maxNewTokens = null)
    {
        if (!File.Exists(path))
        {
            throw new KascadeException($"task file not found: {path}");
        }
        string name = Path.GetFileNameWithoutExtension(path);
        var lines = new List<Line>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        int number = 0;
        foreach (string text in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }
            var line = Parse(text, name, $"{path}:{number}");
            if (!ids.Add(line.Id))
            {
                throw new KascadeException($"{path}:{number}: id '{line.Id}' appears twice");
            }
            lines.Add(line);
        }
        return lines.Count > 0 ? new JsonlTask(name, lines, maxNewTokens) : throw new KascadeException($"{path} holds no tasks");
    }

    private static Line Parse(string text, string fileTask, string where)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new KascadeException($"{where}: not valid JSON ({e.Message})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new KascadeException($"{where}: expected a JSON object");
            }
            if (JsonFields.UnreadableString(root) is { } bad)
            {
                throw new KascadeException($"{where}: holds {bad}");
            }
            string id = root.TryGetProperty("id", out var idValue) && idValue.ValueKind is JsonValueKind.String or JsonValueKind.Number
                ? idValue.ToString()
                : throw new KascadeException($"{where}: needs an \"id\" (string or number)");
            string prompt = root.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String && p.GetString()!.Length > 0
                ? p.GetString()!
                : throw new KascadeException($"{where}: needs a non-empty \"prompt\" string");
            if (!root.TryGetProperty("answers", out var answersValue))
            {
                throw new KascadeException($"{where}: needs \"answers\"");
            }
            string[]? classes = root.TryGetProperty("all_classes", out var c) ? Strings(c, "all_classes", where) : null;
            if (answersValue.ValueKind == JsonValueKind.Object)
            {
                classes ??= answersValue.TryGetProperty("all_classes", out var inner) ? Strings(inner, "all_classes", where) : null;
                answersValue = answersValue.TryGetProperty("answers", out var a) ? a : throw new KascadeException($"{where}: \"answers\" object needs an \"answers\" list");
            }
            string[] answers = Strings(answersValue, "answers", where);
            if (answers.Length == 0)
            {
                throw new KascadeException($"{where}: \"answers\" is empty");
            }
            string task = root.TryGetProperty("task", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : fileTask;
            bool known = LongBench.TryGetValue(task, out var bench);
            MetricKind metric = root.TryGetProperty("metric", out var m)
                ? m.ValueKind == JsonValueKind.String && Scoring.Names.TryGetValue(m.GetString()!, out var named) ? named
                    : throw new KascadeException($"{where}: unknown metric {m}; choose from {string.Join(", ", Scoring.Names.Keys)}")
                : known ? bench.Metric : MetricKind.Contains;
            if (metric == MetricKind.Classification && classes is null)
            {
                throw new KascadeException($"{where}: the classification metric needs \"all_classes\"");
            }
            int maxNew = root.TryGetProperty("max_new_tokens", out var n)
                ? n.ValueKind == JsonValueKind.Number && n.TryGetInt32(out int v) && v > 0 ? v : throw new KascadeException($"{where}: \"max_new_tokens\" must be a positive integer")
                : known ? bench.MaxNewTokens : DefaultMaxNewTokens;
            return new Line(id, prompt, answers, metric, maxNew, classes, known && bench.FirstLine);
        }
    }

    private static string[] Strings(JsonElement value, string field, string where) =>
        value.ValueKind == JsonValueKind.Array && value.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String)
            ? [.. value.EnumerateArray().Select(e => e.GetString()!)]
            : throw new KascadeException($"{where}: \"{field}\" must be a list of strings");

    public EvalSample Create(TextTokenizer tokenizer, int length, int index, int seed)
    {
        var line = _lines[index];
        int maxNew = _maxNewTokens ?? line.MaxNewTokens;
        int budget = PromptBudget.For(length, maxNew);
        if (budget < 2)
        {
            throw new KascadeException($"a context of {length} tokens leaves no room for a prompt and {maxNew} answer tokens");
        }
        int[] ids = tokenizer.Encode(line.Prompt, addSpecialTokens: false);
        string prompt = ids.Length <= budget
            ? line.Prompt
            : tokenizer.Decode(ids[..(budget / 2)]) + tokenizer.Decode(ids[^(budget - budget / 2)..]);
        return new EvalSample(Name, index, line.Id, prompt, line.Answers, line.Metric, maxNew, Classes: line.Classes, FirstLineOnly: line.FirstLine);
    }
}
