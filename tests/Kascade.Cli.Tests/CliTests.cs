using Kascade.Cli;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cli.Tests;

/// <summary>The <c>kascade</c> command end to end, in process: output, statistics, and one-line errors with no stack trace.</summary>
public class CliTests
{
    /// <summary>Runs the command line in process: exit code, stdout and stderr.</summary>
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void Generate_streams_text_and_prints_counts_and_speeds()
    {
        var (code, output, err) = Run("generate", "--model", TestPaths.InstrumentModel, "--prompt", "Once upon a time, in a quiet village by the sea,", "--max-new-tokens", "20");
        Assert.Equal(0, code);
        // HF transformers' 20 greedy tokens for this prompt (golden_hf.json, case 0), decoded.
        using var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(TestPaths.InstrumentModel, "golden_hf.json")));
        var greedy = golden.RootElement.GetProperty("cases")[0].GetProperty("greedy_20").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(Runtime.Tokenization.TextTokenizer.Load(TestPaths.InstrumentModel).Decode(greedy) + "\n", output);
        Assert.Matches(@"prompt tokens: 14, generated tokens: 20 \(max new tokens\), prefill: [\d.]+ tokens/s, decode: [\d.]+ tokens/s", err);
    }

    [Fact]
    public void Generate_reads_a_prompt_file_and_samples_reproducibly()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("prompt.txt"), "The pass key is 71432. Remember it. 71432 is the pass key.\n\nWhat is the pass key? The pass key is");
        string[] args = ["generate", "--model", TestPaths.InstrumentModel, "--prompt-file", dir.File("prompt.txt"), "--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40", "--seed", "5"];
        var first = Run(args);
        Assert.Equal(0, first.Code);
        Assert.Equal(first.Out, Run(args).Out);
    }

    [Fact]
    public void Greedy_answers_the_pass_key()
    {
        var (code, output, _) = Run("generate", "--model", TestPaths.InstrumentModel, "--prompt", "The pass key is 71432. Remember it. 71432 is the pass key.\n\nWhat is the pass key? The pass key is", "--max-new-tokens", "4", "--stop", ".");
        Assert.Equal(0, code);
        Assert.Equal(" 71432", output.TrimEnd('\n'));
    }

    public static TheoryData<string[], string> BadInputs => new()
    {
        { ["generate", "--model", "/no/such/model", "--prompt", "x"], "model directory not found" },
        { ["generate", "--model", TestPaths.InstrumentModel], "give exactly one of --prompt or --prompt-file" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", ""], "the prompt is empty" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt-file", "/no/such/prompt.txt"], "prompt file not found" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--max-new-tokens", "-1"], "--max-new-tokens must be an integer ≥ 0, not -1" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--top-p", "0"], "--top-p must be a finite number in (0, 1], not 0" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--frobnicate"], "--frobnicate" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--device", "tpu"], "tpu" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", string.Concat(Enumerable.Repeat("the pass key is 71432. ", 1500))], "the model's context is 8192" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "kascade", "--schedule", "/no/such/schedule.json"], "schedule file not found" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "bigbird"], "bigbird" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "/no/dev.jsonl", "--out", "/tmp/x.json"], "development set not found" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "passkey", "--out", "/tmp/kascade-eval-bad"], "needs --haystack" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "needles", "--out", "/tmp/kascade-eval-bad"], "unknown task 'needles'" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "/no/such/tasks.jsonl", "--out", "/tmp/kascade-eval-bad"], "task file not found" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--attention", "dense,bigbird", "--out", "/tmp/kascade-eval-bad"], "unknown attention 'bigbird'" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--samples", "0", "--out", "/tmp/kascade-eval-bad"], "--samples must be a positive integer, not 0" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--attention", "dense,quest", "--score-precision", "bf16", "--out", "/tmp/kascade-eval-bad"], "--score-precision applies to the Kascade methods' anchors, not any of 'dense,quest'" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--depths", "0.5,2", "--out", "/tmp/kascade-eval-bad"], "'2' is not a number in [0, 1]" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--attention", "quest", "--baseline", "quest-page=-1", "--out", "/tmp/kascade-eval-bad"], "quest-page must be an integer" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--attention", "omnikv", "--baseline", "omnikv-filter-layers=2,30", "--out", "/tmp/kascade-eval-bad"], "baseline layer 30 does not exist" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "passkey", "--haystack", "/no/hay", "--out", "/tmp/kascade-eval-bad"], "haystack directory not found" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", Path.Combine(TestPaths.RepoRoot, "tests", "data", "longbench-mini"), "--perplexity", "/no/text.txt", "--out", "/tmp/kascade-eval-bad"], "perplexity text not found" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "passkey", "--haystack", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--lengths", "16k", "--out", "/tmp/kascade-eval-bad"], "length 16384 exceeds the model's context of 8192" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_gives_one_clear_error_and_a_nonzero_exit(string[] args, string message)
    {
        var (code, _, err) = Run(args);
        Assert.NotEqual(0, code);
        Assert.Contains(message, err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void Eval_writes_its_tables_and_plot_and_resumes()
    {
        using var dir = new TempDirectory();
        string[] args = ["eval", "--model", TestPaths.InstrumentModel, "--attention", "dense,oracle-topk", "--tasks", "passkey," + Path.Combine(TestPaths.RepoRoot, "tests", "data", "longbench-mini", "lcc.jsonl"),
            "--haystack", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--lengths", "1k", "--samples", "1", "--perplexity", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"),
            "--perplexity-tokens", "16", "--perplexity-windows", "1", "--out", dir.Path];
        var (code, output, err) = Run(args);
        Assert.True(code == 0, err);
        Assert.Contains("## passkey: score (%, mean over samples)", output);
        Assert.Contains("| dense | 100.0 (1) |", output);
        Assert.Contains("## lcc: score", output);
        Assert.Contains("## Perplexity of", output);
        foreach (var name in new[] { "results.md", "results.csv", "results.json", "accuracy-passkey.png", "accuracy-lcc.png", "run.json" })
        {
            Assert.True(File.Exists(dir.File(name)), name);
        }
        var lines = File.ReadAllLines(dir.File("samples.jsonl"));
        Assert.Equal(4, lines.Length);
        var again = Run(args);
        Assert.Equal(0, again.Code);
        Assert.Equal(output, again.Out);
        Assert.Equal(lines, File.ReadAllLines(dir.File("samples.jsonl")));
        var other = Run([.. args, "--seed", "9"]);
        Assert.Equal(1, other.Code);
        Assert.Contains("holds results of a different run (seed: '1' there, '9' now)", other.Err);
    }

    /// <summary>An eval's anchor options apply to its Kascade methods and leave the others as they are.</summary>
    [Fact]
    public void Eval_applies_the_score_precision_to_its_kascade_methods_only()
    {
        using var dir = new TempDirectory();
        var (code, _, err) = Run("eval", "--model", TestPaths.InstrumentModel, "--attention", "dense,kascade", "--score-precision", "bf16", "--tasks", "passkey",
            "--haystack", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--lengths", "1k", "--samples", "1", "--out", dir.Path);
        Assert.True(code == 0, err);
        var identity = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("run.json")))!["identity"]!;
        Assert.Contains(" scores Bf16", identity["method kascade"]!.GetValue<string>());
        Assert.DoesNotContain("scores", identity["method dense"]!.GetValue<string>());
    }

    [Fact]
    public void Methods_lists_every_registered_method_name_first_with_its_devices()
    {
        var (code, output, err) = Run("methods");
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // Scripts (gpu-smoke.sh) take the first word of each line as a method name.
        Assert.Equal(Core.AttentionMethods.All.Select(m => m.Name), lines.Select(l => l.Split(' ')[0]));
        var devices = lines.ToDictionary(l => l.Split(' ')[0], l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        // Every method runs on both backends (the GPU's Kascade and oracle ops: selection.cu).
        Assert.All(devices.Values, d => Assert.Equal("cpu,cuda", d));
        Assert.Contains("--baseline quest-page, quest-dense-layers", lines.Single(l => l.StartsWith("quest ", StringComparison.Ordinal)));
    }

    [Fact]
    public void Kascade_without_a_schedule_says_how_to_make_one()
    {
        using var dir = new TempDirectory();
        foreach (var f in Directory.GetFiles(TestPaths.InstrumentModel).Where(f => !f.EndsWith("kascade-schedule.json", StringComparison.Ordinal)))
        {
            File.Copy(f, dir.File(Path.GetFileName(f)));
        }
        var (code, _, err) = Run("generate", "--model", dir.Path, "--prompt", "x", "--attention", "kascade");
        Assert.Equal(1, code);
        Assert.Contains("kascade calibrate --model", err);
    }

    [Fact]
    public void Generate_with_kascade_uses_the_models_schedule()
    {
        var (code, output, err) = Run("generate", "--model", TestPaths.InstrumentModel, "--prompt", "Once upon a time, in a quiet village by the sea,", "--max-new-tokens", "10", "--attention", "kascade");
        Assert.Equal(0, code);
        Assert.False(string.IsNullOrWhiteSpace(output));
        Assert.Contains("generated tokens: 10", err);
    }

    [Fact]
    public void Calibrate_writes_a_schedule_that_generate_accepts_and_its_plots()
    {
        using var dir = new TempDirectory();
        string schedule = dir.File("s.json");
        int layers = Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel).Layers;
        var (code, output, err) = Run("calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", Path.Combine(TestPaths.RepoRoot, "data", "calibration", "instrument-dev.jsonl"), "--examples", "1", "--max-new-tokens", "4", "--anchors", "4",
            "--write-counts", $"2,4,{layers}", "--out", schedule);
        Assert.True(code == 0, err);
        // The DP for every anchor count, the written one marked.
        var rows = output.Split('\n').Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\| \d+ \| 0")).ToArray();
        Assert.Equal(Enumerable.Range(1, layers).Select(k => $"| {k} |"), rows.Select(r => r[..(r.IndexOf('|', 2) + 1)]));
        Assert.EndsWith("| written |", rows[3]);
        Assert.EndsWith("| 1.0000 |  |", rows[^1]);
        Assert.True(File.Exists(dir.File("s.similarity.png")) && File.Exists(dir.File("s.importance.png")) && File.Exists(dir.File("s.anchors.png")));
        var generate = Run("generate", "--model", TestPaths.InstrumentModel, "--prompt", "Hello", "--max-new-tokens", "3", "--attention", "kascade", "--schedule", schedule);
        Assert.Equal(0, generate.Code);

        // --write-counts: the same calibration's schedule for each count (the DP's anchors, their head maps), the written
        // count's equal to --out's, every layer an anchor at the layer count.
        var config = Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel);
        var main = Runtime.Kascade.ScheduleFile.Load(schedule, config);
        var four = Runtime.Kascade.ScheduleFile.Load(dir.File("s.k4.json"), config);
        Assert.Equal(main.Anchors, four.Anchors);
        Assert.Equal(main.HeadMap.Select(r => string.Join(",", r)), four.HeadMap.Select(r => string.Join(",", r)));
        var two = Runtime.Kascade.ScheduleFile.Load(dir.File("s.k2.json"), config);
        Assert.Equal(2, two.Anchors.Count);
        Assert.Equal(main.Choices!.Single(c => c.AnchorCount == 2).Anchors, two.Anchors);
        Assert.Equal(Enumerable.Range(0, layers), Runtime.Kascade.ScheduleFile.Load(dir.File($"s.k{layers}.json"), config).Anchors);
        Assert.Contains($"wrote {dir.File("s.k2.json")} (2 anchors)", output);

        // auto: the fewest anchors whose weakest covered layer reaches the target.
        var auto = Run("calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", Path.Combine(TestPaths.RepoRoot, "data", "calibration", "instrument-dev.jsonl"), "--examples", "1", "--max-new-tokens", "4", "--anchors", "auto", "--target-similarity", "0.5", "--out", dir.File("auto.json"));
        Assert.True(auto.Code == 0, auto.Err);
        var written = Runtime.Kascade.ScheduleFile.Load(dir.File("auto.json"), Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel));
        var chosen = written.Choices!.Single(c => c.AnchorCount == written.Anchors.Count);
        Assert.True(chosen.WeakestSimilarity >= 0.5);
        Assert.All(written.Choices!.Where(c => c.AnchorCount < chosen.AnchorCount), c => Assert.True(c.WeakestSimilarity < 0.5));
    }

    [Fact]
    public void Bench_generate_times_kascade_on_random_weights_with_the_anchors_asked_for()
    {
        using var dir = new TempDirectory();
        var (code, output, err) = Run("bench", "generate", "--random-config", TestPaths.InstrumentModel, "--attention", "dense,kascade", "--anchors", "2", "--anchor-refresh", "3",
            "--contexts", "300", "--decode-tokens", "4", "--json", dir.File("speed.json"));
        Assert.True(code == 0, err);
        Assert.Contains("(random weights), Kascade: 2 anchors spread over the layers", output);
        Assert.Matches(@"\| dense \| 300 \| 296 \|", output);
        Assert.Matches(@"\| kascade \(refresh 3\) \| 300 \| 296 \|", output);
        // The rows as JSON: each row's method, budget, anchors and refresh beside its speed.
        var rows = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("speed.json")))!["rows"]!.AsArray();
        var kascade = rows.Single(r => r!["method"]!.GetValue<string>() == "kascade")!;
        Assert.Equal((10.0, 2, 3), (kascade["topk_percent"]!.GetValue<double>(), kascade["anchors"]!.GetValue<int>(), kascade["anchor_refresh"]!.GetValue<int>()));
        Assert.True(kascade["decode_tokens_per_second"]!.GetValue<double>() > 0);

        // Without --anchors a model of fewer layers than the paper's 5 anchors spreads what it has.
        string tiny = Path.Combine(TestPaths.RepoRoot, "tests", "data", "fixtures", "tiny", "llama-linear-tied");
        var small = Run("bench", "generate", "--random-config", tiny, "--attention", "dense,kascade", "--contexts", "64", "--decode-tokens", "2");
        Assert.True(small.Code == 0, small.Err);
        Assert.Contains($"Kascade: {Math.Min(5, Runtime.Loading.ConfigLoader.Load(tiny).Layers)} anchors spread", small.Out);
    }

    [Fact]
    public void Bench_methods_times_every_setting_beside_dense_and_writes_what_frontier_reads()
    {
        using var dir = new TempDirectory();
        var (code, output, err) = Run("bench", "methods", "--config", TestPaths.InstrumentModel, "--device", "cpu", "--contexts", "300", "--runs", "2",
            "--attention", "kascade,quest,streamingllm", "--topk-percent", "10,20", "--anchors", "2,3", "--anchor-refresh", "1,4",
            "--baseline", "streaming-window-percent=20", "--json", dir.File("methods.json"));
        Assert.True(code == 0, err);
        int layers = Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel).Layers;
        Assert.Contains($"{layers} layers", output);
        Assert.Matches(@"\| dense \|  \| 300 \| [0-9.]+ \| [0-9.]+ \| 1\.00× \|", output);
        Assert.Matches(@"\| kascade \| 3 anchors, 20%, refresh 4 \| 300 \|", output);
        Assert.Matches(@"\| quest \| 20% \| 300 \|", output);
        Assert.Matches(@"\| streamingllm \| window 20% \| 300 \|", output);
        // Dense once, kascade at 2 budgets × 2 anchor counts × 2 refreshes, quest at 2 budgets, streamingllm at its window.
        var rows = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("methods.json")))!["rows"]!.AsArray();
        Assert.Equal(1 + 8 + 2 + 1, rows.Count);
        var kept = rows.Single(r => r!["method"]!.GetValue<string>() == "kascade" && r["anchors"]!.GetValue<int>() == 3 && r["anchor_refresh"]!.GetValue<int>() == 4 && r["topk_percent"]!.GetValue<double>() == 20)!;
        Assert.Equal(kept["step_ms"]!.GetValue<double>() / layers, kept["layer_ms"]!.GetValue<double>(), 12);
        Assert.Equal(20, rows.Single(r => r!["method"]!.GetValue<string>() == "streamingllm")!["window_percent"]!.GetValue<double>());

        // Without --anchors and --anchor-refresh: the paper's 5 anchors (fewer on a smaller model), every step selecting;
        // with both score precisions.
        var plain = Run("bench", "methods", "--config", TestPaths.InstrumentModel, "--device", "cpu", "--contexts", "300", "--runs", "1",
            "--score-precision", "exact,bf16", "--json", dir.File("precisions.json"));
        Assert.True(plain.Code == 0, plain.Err);
        Assert.Contains($"| kascade | {Math.Min(5, layers)} anchors, 10% | 300 |", plain.Out);
        Assert.Contains($"| kascade | {Math.Min(5, layers)} anchors, 10%, bf16 scores | 300 |", plain.Out);
        var precisions = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("precisions.json")))!["rows"]!.AsArray()
            .Where(r => r!["method"]!.GetValue<string>() == "kascade").Select(r => r!["score_precision"]!.GetValue<string>());
        Assert.Equal(["exact", "bf16"], precisions);

        // A batch: dense, Kascade and a baseline on the batched decode ops, the batch in the table and the JSON.
        var batched = Run("bench", "methods", "--config", TestPaths.InstrumentModel, "--device", "cpu", "--contexts", "300", "--runs", "1", "--batch", "3",
            "--attention", "kascade,quest", "--anchor-refresh", "1,4", "--json", dir.File("batch.json"));
        Assert.True(batched.Code == 0, batched.Err);
        Assert.Contains("decode, batch 3", batched.Out);
        Assert.Contains($"| kascade | {Math.Min(5, layers)} anchors, 10%, refresh 4 | 300 |", batched.Out);
        Assert.Contains("| quest | 10% | 300 |", batched.Out);
        Assert.Equal(3, System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("batch.json")))!["batch"]!.GetValue<int>());
    }

    [Fact]
    public void Analyze_reports_pass_key_answers_and_mass_per_layer()
    {
        var (code, output, err) = Run("analyze", "--model", TestPaths.InstrumentModel, "--haystack", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--attention", "kascade", "--topk-percent", "100", "--lengths", "600", "--samples", "1");
        Assert.True(code == 0, err);
        // At 100% Kascade is dense: same answers, and every layer sees all of its attention mass.
        Assert.Contains("| 600 | 1 |", output);
        Assert.Matches(@"\| 1/1 \| 1/1 \| 1/1 \|", output);
        var config = Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel);
        var schedule = Runtime.Kascade.ScheduleFile.Load(Path.Combine(TestPaths.InstrumentModel, "kascade-schedule.json"), config);
        var reuse = Enumerable.Range(0, config.Layers).Where(l => schedule.RoleOf(l) is Core.LayerRole.Reuse).ToArray();
        Assert.Contains($"| {reuse[^1]} | reuse", output);
        Assert.Matches($@"\| {reuse[0]} \| reuse \d+ \[[01],[01]\] \| 1\.000 \| 1\.000 \| 1\.000 \|", output);
    }

    [Theory]
    [InlineData("oracle-topk", "own top-k")]
    [InlineData("quest", "not measured")]
    public void Analyze_measures_the_oracle_and_says_what_it_cannot_see(string method, string role)
    {
        var (code, output, err) = Run("analyze", "--model", TestPaths.InstrumentModel, "--haystack", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--attention", method, "--lengths", "600", "--samples", "1");
        Assert.True(code == 0, err);
        var rows = output.Split('\n').Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\| \d+ \| [a-z]")).ToArray();
        Assert.Equal(Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel).Layers, rows.Length);
        Assert.All(rows, r => Assert.Contains($"| {role} |", r));
        var means = rows.Select(r => r.Split('|', StringSplitOptions.TrimEntries)[3]).ToArray();
        if (method == "quest")
        {
            Assert.All(means, m => Assert.Equal("—", m));
        }
        else
        {
            // 128 of ~600 keys: the own Top-k holds most of a layer's mass but not all of it.
            Assert.All(means, m => Assert.InRange(double.Parse(m, System.Globalization.CultureInfo.InvariantCulture), 0.2, 0.9999));
        }
    }

    [Fact]
    public void Corrupt_model_file_is_reported_without_a_stack_trace()
    {
        using var dir = new TempDirectory();
        foreach (var f in Directory.GetFiles(TestPaths.InstrumentModel))
        {
            File.Copy(f, dir.File(Path.GetFileName(f)));
        }
        string shard = Path.GetFileName(Directory.GetFiles(dir.Path, "*.safetensors").Order().Last());
        using (var s = File.OpenWrite(dir.File(shard)))
        {
            s.SetLength(4);
        }
        var (code, _, err) = Run("generate", "--model", dir.Path, "--prompt", "x");
        Assert.Equal(1, code);
        Assert.Contains($"{shard}: not a safetensors file", err);
        Assert.DoesNotContain("   at ", err);
    }
}
