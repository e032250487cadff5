using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using Kascade.Core;
using Kascade.Evaluation;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime;
using Kascade.Runtime.Kascade;

namespace Kascade.Cli;

public static partial class CliApp
{
    private static Command EvalCommand(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption();
        var methods = AttentionOptions.MethodList(new Option<string>("--attention") { Description = $"Attention methods to compare, comma-separated ({AttentionOptions.Names})", DefaultValueFactory = _ => "dense,kascade" });
        var tasks = new Option<string>("--tasks") { Description = $"Comma-separated: synthetic tasks ({string.Join(", ", SyntheticTask.Names)}), .jsonl task files or directories of them; empty for perplexity only", DefaultValueFactory = _ => "passkey,single" };
        var haystack = new Option<string?>("--haystack") { Description = "Directory of .txt files the synthetic tasks hide their needles in (e.g. tests/data/haystack); required by the synthetic tasks, which are the default" };
        var depths = OptionRules.Fractions("--depths", "Needle depths in [0, 1], comma-separated; sample i uses depth i mod count (default 0.05, 0.15, …, 0.95)");
        var lengths = OptionRules.Lengths("--lengths", "Context lengths (prompt + answer), e.g. 2k,4k,8k", [2048, 4096, 8192]);
        var samples = new Option<int>("--samples") { Description = "Prompts per task and length (a task file gives at most its lines)", DefaultValueFactory = _ => 20 }.AtLeast(1);
        var seed = new Option<int>("--seed") { Description = "Seed of the generated prompts", DefaultValueFactory = _ => 1 };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Answer tokens for every task (default: each task's own budget)" }.AtLeast(1);
        var perplexity = new Option<string?>("--perplexity") { Description = "Also measure perplexity of this text file (or directory of .txt files) at each length" };
        var perplexityLengths = OptionRules.Lengths("--perplexity-lengths", "Context lengths of the perplexity windows (default: --lengths)", null);
        var perplexityTokens = new Option<int>("--perplexity-tokens") { Description = "Tokens scored at the end of each perplexity window", DefaultValueFactory = _ => 256 }.AtLeast(1);
        var perplexityWindows = new Option<int>("--perplexity-windows") { Description = "Consecutive windows of the text per length", DefaultValueFactory = _ => 2 }.AtLeast(1);
        var device = DeviceOption("cpu");
        var threads = ThreadsOption();
        var chunk = ChunkOption();
        var reportOnly = new Option<bool>("--report-only") { Description = "Write the tables and plots from what --out holds and run nothing (e.g. where the run's device is absent)" };
        var output = new Option<string>("--out") { Description = "Directory for results (an interrupted run resumes from it)", Required = true }.WritableDirectory();
        var attention = AttentionOptions.Create();
        var command = new Command("eval", "Score attention methods side by side on long-context tasks (RULER-style, JSONL/LongBench) and perplexity; writes Markdown, CSV, JSON and plots, resumable.")
        {
            model, methods, tasks, haystack, depths, lengths, samples, seed, maxNew, perplexity, perplexityLengths, perplexityTokens, perplexityWindows, device, threads, chunk, reportOnly, output,
        };
        attention.AddTo(command, withMethod: false);
        command.Validators.Add(result =>
        {
            // The default tasks are synthetic: say at once that they need a haystack, not after the model is loaded.
            var synthetic = result.ValueOr(tasks, "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault(SyntheticTask.Names.Contains);
            if (synthetic is not null && result.GetResult(haystack) is null && !result.ValueOr(reportOnly, false))
            {
                result.AddError($"task '{synthetic}' needs --haystack DIR (text files to hide needles in, e.g. tests/data/haystack)");
            }
        });
        command.SetAction(parse =>
        {
            int sampleCount = parse.GetValue(samples);
            int? answerTokens = parse.GetValue(maxNew);
            var depthList = parse.GetValue(depths) is { Length: > 0 } given ? given : SyntheticTask.DefaultDepths;
            string deviceName = parse.GetValue(device)!;
            // A report needs the model's tokenizer and schedule, not its device: the CPU backend opens it without running anything.
            using var backend = parse.GetValue(reportOnly) ? new Kascade.Cpu.CpuBackend(parse.GetValue(threads)) : Backends.Create(deviceName, parse.GetValue(threads));
            using var dir = OpenModel(parse, parse.GetValue(model)!, backend);
            var methodList = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
            var evalMethods = methodList.Select(name => new EvalMethod(name, attention.Policy(parse, dir, name, methodList))).ToList();
            var taskList = ParseTasks(parse.GetValue(tasks)!, parse.GetValue(haystack), depthList, answerTokens);
            var perplexityWindowsSpec = parse.GetValue(perplexity) is { } text
                ? new PerplexityWindows(text, dir.Tokenizer, parse.GetValue(perplexityLengths) is { Length: > 0 } own ? own : parse.GetValue(lengths)!, parse.GetValue(perplexityTokens), parse.GetValue(perplexityWindows))
                : null;
            if (taskList.Count == 0 && perplexityWindowsSpec is null)
            {
                throw new KascadeException("nothing to evaluate: give --tasks, --perplexity or both");
            }
            var plan = new EvalPlan(taskList, evalMethods, parse.GetValue(lengths)!, sampleCount, parse.GetValue(seed), perplexityWindowsSpec, parse.GetValue(chunk));
            EvalRunner.Check(dir.Config, plan);
            var identity = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["model"] = $"{dir.Name} {ScheduleFile.ConfigHash(dir.Path)}",
                ["device"] = deviceName.StartsWith("cuda", StringComparison.Ordinal) ? "cuda" : "cpu",
                ["seed"] = plan.Seed.ToString(CultureInfo.InvariantCulture),
                ["depths"] = string.Join(',', depthList.Select(x => x.ToString("R", CultureInfo.InvariantCulture))),
                ["max-new-tokens"] = answerTokens?.ToString(CultureInfo.InvariantCulture) ?? "task",
            };
            if (taskList.OfType<SyntheticTask>().Any())
            {
                identity["haystack"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(parse.GetValue(haystack)!));
            }
            if (perplexityWindowsSpec is { } p)
            {
                identity["perplexity"] = $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(p.Source))} last {p.ScoredTokens}";
            }
            foreach (var method in evalMethods)
            {
                identity[$"method {method.Name}"] = DescribePolicy(method.Policy);
            }
            string outDir = parse.GetValue(output)!;
            var store = ResultStore.Open(outDir, identity);
            WithProgress(stderr, progress =>
            {
                if (parse.GetValue(reportOnly))
                {
                    return;
                }
                var bar = progress.AddTask("evaluating", maxValue: 1);
                EvalRunner.Run(dir, plan, store, (done, total, next) =>
                {
                    bar.MaxValue = Math.Max(total, 1);
                    bar.Value = done;
                    bar.Description = Spectre.Console.Markup.Escape(next);
                });
            });
            string title = $"kascade {string.Join(' ', args)}";
            var report = EvalReport.From(store, plan);
            var files = report.WriteTables(outDir, title).ToList();
            try
            {
                files.AddRange(report.WritePlots(outDir));
            }
            catch (Exception e) when (e.GetBaseException() is DllNotFoundException)
            {
                // A NativeAOT build copied without libSkiaSharp.so: the tables are the results, the plots can be made later.
                stderr.WriteLine("warning: plots not written: SkiaSharp's native library (libSkiaSharp) is missing beside the kascade binary");
            }
            stdout.Write(report.ToMarkdown(title));
            stderr.WriteLine($"wrote {string.Join(", ", files)}");
        });
        return command;
    }

    /// <summary>Synthetic task names, and .jsonl files or directories (every task file in them).</summary>
    private static List<IEvalTask> ParseTasks(string text, string? haystackPath, IReadOnlyList<double> depths, int? maxNewTokens)
    {
        Haystack? haystack = null;
        var result = new List<IEvalTask>();
        foreach (string item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (item.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || Directory.Exists(item))
            {
                result.AddRange(JsonlTask.LoadAll(item, maxNewTokens));
                continue;
            }
            if (!SyntheticTask.Names.Contains(item))
            {
                throw new KascadeException($"unknown task '{item}'; synthetic tasks are {string.Join(", ", SyntheticTask.Names)}, or give a .jsonl file or a directory of them");
            }
            haystack ??= Haystack.Load(haystackPath ?? throw new KascadeException($"task '{item}' needs --haystack DIR (text files to hide needles in, e.g. tests/data/haystack)"));
            result.Add(new SyntheticTask(item, haystack, depths, maxNewTokens));
        }
        var twice = result.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        return twice is null ? result : throw new KascadeException($"task '{twice.Key}' is named twice");
    }

    /// <summary>Everything a policy's results depend on, for a run's identity, and how its schedule's anchors were chosen where not by the paper's DP (which names its points on a frontier).</summary>
    private static string DescribePolicy(AttentionPolicy policy)
    {
        string schedule = policy.Schedule is { } s
            ? $" anchors {string.Join(',', s.Anchors)} head map {Convert.ToHexString(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join(';', s.HeadMap.Select(l => string.Join(',', l))))))[..16]}"
            : "";
        string baselines = policy.IsBaseline ? $" {policy.Baselines.Describe()}" : "";
        // Named only when not the default, so stores written before the option existed keep their identity.
        string rule = policy.NeedsSchedule && policy.BudgetRule != BudgetRule.Rounded ? $" budget {policy.BudgetRule}" : "";
        string refresh = policy.AnchorRefresh > 1 ? $" refresh {policy.AnchorRefresh}" : "";
        string precision = policy.NeedsSchedule && policy.ScorePrecision != ScorePrecision.Exact ? $" scores {policy.ScorePrecision}" : "";
        string objective = AnchorObjectives.Parse(policy.Schedule?.Provenance?.Objective) is { } o && o != AnchorObjective.Weighted ? $" objective {o.Name()}" : "";
        return string.Create(CultureInfo.InvariantCulture, $"{policy.Method} top-k {policy.TopKPercent}% {policy.Pooling}{schedule}{baselines}{rule}{precision}{refresh}{objective}");
    }
}
