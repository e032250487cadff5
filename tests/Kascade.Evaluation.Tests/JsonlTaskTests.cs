using Kascade.Core;
using Kascade.Evaluation.Metrics;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;
using Xunit;

namespace Kascade.Evaluation.Tests;

/// <summary>JSONL task files: LongBench's metric choice, middle truncation, and bad lines named by number.</summary>
public class JsonlTaskTests
{
    private static readonly Lazy<TextTokenizer> Tokenizer = new(() => TextTokenizer.Load(TestPaths.InstrumentModel));

    private static JsonlTask Write(TempDirectory dir, string name, params string[] lines)
    {
        File.WriteAllLines(dir.File(name), lines);
        return JsonlTask.Load(dir.File(name));
    }

    public static TheoryData<string, string> BadLines => new()
    {
        { "{\"id\": 1, \"prompt\": \"p\", \"answers\": [\"a\"]", "not valid JSON" },
        { "[1, 2]", "expected a JSON object" },
        { "{\"prompt\": \"p\", \"answers\": [\"a\"]}", "needs an \"id\"" },
        { "{\"id\": \"x\", \"answers\": [\"a\"]}", "non-empty \"prompt\"" },
        { "{\"id\": \"x\", \"prompt\": \"p\"}", "needs \"answers\"" },
        { "{\"id\": \"x\", \"prompt\": \"p\", \"answers\": \"a\"}", "\"answers\" must be a list of strings" },
        { "{\"id\": \"x\", \"prompt\": \"p\", \"answers\": []}", "\"answers\" is empty" },
        { "{\"id\": \"x\", \"prompt\": \"p\", \"answers\": [\"a\"], \"metric\": \"bleu\"}", "unknown metric" },
        { "{\"id\": \"x\", \"prompt\": \"p\", \"answers\": [\"a\"], \"metric\": \"classification\"}", "needs \"all_classes\"" },
        { "{\"id\": \"x\", \"prompt\": \"p\", \"answers\": [\"a\"], \"max_new_tokens\": 0}", "positive integer" },
        { "{\"id\": \"0\", \"prompt\": \"p\", \"answers\": [\"a\"]}", "id '0' appears twice" },
    };

    [Theory]
    [MemberData(nameof(BadLines))]
    public void A_bad_line_is_refused_with_its_line_number(string line, string message)
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<KascadeException>(() => Write(dir, "tasks.jsonl", "{\"id\": \"0\", \"prompt\": \"p\", \"answers\": [\"a\"]}", "", line));
        Assert.Contains("tasks.jsonl:3:", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Missing_and_empty_files_are_named()
    {
        using var dir = new TempDirectory();
        Assert.Contains("task file not found", Assert.Throws<KascadeException>(() => JsonlTask.Load(dir.File("none.jsonl"))).Message);
        Assert.Contains("holds no tasks", Assert.Throws<KascadeException>(() => Write(dir, "empty.jsonl", "")).Message);
        string none = Directory.CreateDirectory(dir.File("none")).FullName;
        Assert.Contains("no .jsonl files", Assert.Throws<KascadeException>(() => JsonlTask.LoadAll(none)).Message);
    }

    [Fact]
    public void LongBench_files_get_LongBench_metrics_and_answer_lengths()
    {
        var tasks = JsonlTask.LoadAll(Path.Combine(TestPaths.RepoRoot, "tests", "data", "longbench-mini")).ToDictionary(t => t.Name);
        var trec = tasks["trec"].Create(Tokenizer.Value, 8192, 0, 1);
        Assert.Equal(MetricKind.Classification, trec.Metric);
        Assert.True(trec.FirstLineOnly);
        Assert.Equal(64, trec.MaxNewTokens);
        Assert.NotNull(trec.Classes);
        Assert.Contains(trec.Answers[0], trec.Classes!);
        Assert.Equal(MetricKind.CodeSim, tasks["lcc"].Create(Tokenizer.Value, 8192, 0, 1).Metric);
        Assert.Equal(MetricKind.Count, tasks["passage_count"].Create(Tokenizer.Value, 8192, 0, 1).Metric);
        Assert.Equal(MetricKind.RougeLZh, tasks["vcsum"].Create(Tokenizer.Value, 8192, 0, 1).Metric);
        Assert.Equal(MetricKind.QaF1, tasks["hotpotqa"].Create(Tokenizer.Value, 8192, 0, 1).Metric);
    }

    [Fact]
    public void A_long_prompt_keeps_its_head_and_tail_and_fits_the_context()
    {
        using var dir = new TempDirectory();
        string head = "Read the essay below.", tail = "Question: who wrote it? Answer:";
        string body = string.Concat(Enumerable.Repeat(" the cat sat on the mat and looked at the rain.", 400));
        var task = Write(dir, "generic.jsonl", $"{{\"id\": 7, \"prompt\": \"{head}{body}{tail}\", \"answers\": [\"Graham\"]}}");
        var sample = task.Create(Tokenizer.Value, 1024, 0, 1);
        Assert.Equal(MetricKind.Contains, sample.Metric);
        Assert.Equal(JsonlTask.DefaultMaxNewTokens, sample.MaxNewTokens);
        Assert.Equal("7", sample.Id);
        Assert.StartsWith(head, sample.Prompt);
        Assert.EndsWith(tail, sample.Prompt);
        Assert.InRange(Tokenizer.Value.Encode(sample.Prompt).Length + sample.MaxNewTokens, 1000, 1024);
        // Short prompts are untouched.
        Assert.Equal(head + body + tail, task.Create(Tokenizer.Value, 8192, 0, 1).Prompt);
    }
}
