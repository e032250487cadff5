using Kascade.Core;
using Kascade.Cpu;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime;
using Kascade.Testing;
using Xunit;

namespace Kascade.Evaluation.Tests;

/// <summary>
/// Whole evaluations on the instrument model: resumable and deterministic, streamingllm losing exactly the needles
/// outside its window, perplexity by decode steps equal to the dense all-positions forward, and the written report.
/// </summary>
public sealed class EvalRunnerTests : IDisposable
{
    private static readonly string HaystackDir = Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack");

    // One model (and backend) per test class: a backend holds per-session rotary tables.
    private readonly ModelDirectory _model = ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend());

    public void Dispose() => _model.Dispose();

    private EvalPlan Plan(IReadOnlyList<double> depths, int samples, params string[] methods) => new(
        [new SyntheticTask("passkey", Haystack.Load(HaystackDir), depths)],
        [.. methods.Select(m => new EvalMethod(m, m == "dense" ? AttentionPolicy.Dense : new AttentionPolicy(AttentionMethod.StreamingLlm)))],
        [2048],
        samples,
        Seed: 5);

    private static readonly Dictionary<string, string> Identity = new() { ["test"] = "1" };

    [Fact]
    public void Streamingllm_fails_exactly_where_the_needle_lies_outside_its_window()
    {
        using var dir = new TempDirectory();
        // 2k keys: the window is the 4 sinks and the last ~610 tokens (30%), so depth 0.9 is inside and 0.1, 0.4 are not.
        var plan = Plan([0.1, 0.4, 0.9], 3, "dense", "streamingllm");
        var store = ResultStore.Open(dir.Path, Identity);
        EvalRunner.Run(_model, plan, store);
        double Score(string method, int index) => store.Samples.Single(s => s.Method == method && s.Index == index).Score;
        Assert.All(Enumerable.Range(0, 3), i => Assert.Equal(1.0, Score("dense", i)));
        Assert.Equal(0.0, Score("streamingllm", 0));
        Assert.Equal(0.0, Score("streamingllm", 1));
        Assert.Equal(1.0, Score("streamingllm", 2));
    }

    [Fact]
    public void A_finished_run_resumes_with_nothing_to_do_and_runs_are_reproducible()
    {
        using var first = new TempDirectory();
        using var second = new TempDirectory();
        var plan = Plan(SyntheticTask.DefaultDepths, 2, "dense", "streamingllm");
        EvalRunner.Run(_model, plan, ResultStore.Open(first.Path, Identity));
        // Half done: the second directory holds only sample 0, and the rest is filled in.
        EvalRunner.Run(_model, plan with { Samples = 1 }, ResultStore.Open(second.Path, Identity));
        var resumed = new List<(int Done, int Total)>();
        EvalRunner.Run(_model, plan, ResultStore.Open(second.Path, Identity), (done, total, _) => resumed.Add((done, total)));
        Assert.Equal((2, 4), resumed[0]);
        Assert.Equal(
            File.ReadAllLines(Path.Combine(first.Path, ResultStore.SamplesFile)).Order(),
            File.ReadAllLines(Path.Combine(second.Path, ResultStore.SamplesFile)).Order());
        var again = new List<(int Done, int Total)>();
        EvalRunner.Run(_model, plan, ResultStore.Open(first.Path, Identity), (done, total, _) => again.Add((done, total)));
        Assert.Equal([(4, 4)], again);
    }

    [Fact]
    public void Dense_perplexity_by_decode_steps_equals_the_all_positions_forward()
    {
        using var dir = new TempDirectory();
        const int Length = 600, Scored = 40;
        var windows = new PerplexityWindows(HaystackDir, _model.Tokenizer, [Length], Scored, windows: 1);
        int[] window = windows.Window(Length, 0);
        double byDecode = windows.NegativeLogLikelihood(_model.Model, window, AttentionPolicy.Dense, prefillChunk: 256);
        using var session = _model.Model.CreateSession(Length, maxChunk: Length);
        float[] all = session.ForwardAll(window);
        int vocab = _model.Config.VocabSize;
        double reference = 0;
        for (int i = Length - Scored; i < Length; i++)
        {
            reference -= PerplexityWindows.LogProbability(all.AsSpan((i - 1) * vocab, vocab), window[i]);
        }
        // fp32 activations through different chunkings: the sums agree to well under 0.1% of a nat a token.
        Assert.Equal(reference, byDecode, Scored * 1e-3);
        Assert.InRange(Math.Exp(byDecode / Scored), 2, 500);
    }

    [Fact]
    public void The_report_averages_cells_and_writes_every_format()
    {
        using var dir = new TempDirectory();
        var plan = Plan([0.5], 3, "dense", "streamingllm") with { Lengths = [2048, 4096] };
        var store = ResultStore.Open(dir.Path, Identity);
        foreach (var (method, length, index, score) in new[] { ("dense", 2048, 0, 1.0), ("dense", 2048, 1, 0.0), ("dense", 2048, 2, 0.5), ("streamingllm", 4096, 0, 1.0), ("dense", 2048, 3, 1.0) })
        {
            store.Add(new SampleResult("passkey", length, method, index, $"{index}", 0.5, 1000 + index, 8, score, "x", ["1"]));
        }
        var report = EvalReport.From(store, plan);
        // Sample 3 is beyond the plan's 3 samples and is left out: (1 + 0 + 0.5) / 3 = 50%.
        var dense = Assert.Single(report.Cells, c => c.Method == "dense");
        Assert.Equal((50.0, 3, 1001.0), (dense.Accuracy, dense.Samples, dense.MeanPromptTokens));
        Assert.Equal(100.0, Assert.Single(report.Cells, c => c.Method == "streamingllm").Accuracy);
        var files = report.Write(dir.Path, "test run");
        Assert.All(files, f => Assert.True(new FileInfo(f).Length > 0, f));
        Assert.Contains("| dense | 50.0 (3) | - |", File.ReadAllText(Path.Combine(dir.Path, "results.md")));
        Assert.Contains("accuracy,passkey,2048,dense,3,50,1001,8,", File.ReadAllText(Path.Combine(dir.Path, "results.csv")));
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, "results.json")));
        Assert.Equal(2, json.RootElement.GetProperty("accuracy").GetArrayLength());
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(Path.Combine(dir.Path, "accuracy-passkey.png"))[..4]);
    }
}
