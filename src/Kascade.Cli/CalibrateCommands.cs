using System.CommandLine;
using System.Globalization;
using Kascade.Calibration;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Evaluation;
using Kascade.Runtime;
using Kascade.Runtime.Kascade;

namespace Kascade.Cli;

public static partial class CliApp
{
    private static Command CalibrateCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption();
        var devSet = new Option<string>("--dev-set") { Description = "Development set: JSONL of {\"id\", \"prompt\"}", Required = true };
        var examples = new Option<int?>("--examples") { Description = "Use the first N prompts (default: all)" }.AtLeast(1);
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Greedy decode steps after each prompt", DefaultValueFactory = _ => 32 }.AtLeast(0);
        var anchors = new Option<string>("--anchors") { Description = "Anchor layers in the schedule, layer 0 included, or auto: the fewest whose weakest covered layer reaches --target-similarity", DefaultValueFactory = _ => "5" }
            .Must(a => a == "auto" || (int.TryParse(a, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1), "a positive integer or auto");
        var target = new Option<double>("--target-similarity") { Description = "With --anchors auto: the similarity S[anchor][layer] every reuse layer must reach", DefaultValueFactory = _ => 0.9 }
            .Must(t => t > 0 && t <= 1, "in (0, 1]");
        var percent = new Option<double>("--topk-percent") { Description = "Top-k percent written into the schedule", DefaultValueFactory = _ => 10 }.Percent();
        var output = new Option<string>("--out") { Description = "Schedule file to write; plots go beside it", Required = true }.WritableFile();
        var writeCounts = OptionRules.Counts("--write-counts", "Also write the schedule of each of these anchor counts beside --out (STEM.kN.json), e.g. 3,5,8,12 for an accuracy-speed frontier");
        var objective = new Option<string>("--objective") { Description = "What the anchor DP maximises: weighted (the paper: importance × similarity covered) or log (importance × ln similarity: a badly predicted layer costs more; docs/kascade.md)", DefaultValueFactory = _ => AnchorObjective.Weighted.Name() };
        objective.AcceptOnlyFromAmong([.. AnchorObjectives.Names]);
        var threads = ThreadsOption();
        var command = new Command("calibrate", "Choose Kascade anchors (DP over layer similarity) and head maps for a model from a development set.")
        {
            model, devSet, examples, maxNew, anchors, target, percent, output, writeCounts, objective, threads,
        };
        command.SetAction(parse =>
        {
            var set = DevSet.Read(parse.GetValue(devSet)!, parse.GetValue(examples));
            using var backend = new CpuBackend(parse.GetValue(threads));
            using var dir = OpenModel(parse, parse.GetValue(model)!, backend);
            int? anchorCount = parse.GetValue(anchors) is "auto" ? null : int.Parse(parse.GetValue(anchors)!, CultureInfo.InvariantCulture);
            var options = new CalibrationOptions(anchorCount, parse.GetValue(maxNew), TopKPercent: parse.GetValue(percent), TargetSimilarity: parse.GetValue(target),
                Objective: AnchorObjectives.Parse(parse.GetValue(objective)) ?? AnchorObjective.Weighted);
            Calibrator.Check(dir.Config, options);
            var counts = parse.GetValue(writeCounts) ?? [];
            if (counts.FirstOrDefault(n => n > dir.Config.Layers) is > 0 and var tooMany)
            {
                throw new KascadeException($"--write-counts {tooMany}: the model has {dir.Config.Layers} layers");
            }
            CalibrationResult? result = null;
            WithProgress(stderr, progress =>
            {
                var task = progress.AddTask("calibrating", maxValue: set.Count);
                result = Calibrator.Run(dir, set, Path.GetFileName(parse.GetValue(devSet)!), options, (done, _) => task.Value = done);
            });
            string outPath = parse.GetValue(output)!;
            ScheduleFile.Save(result!.Schedule, outPath);
            string stem = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outPath))!, Path.GetFileNameWithoutExtension(outPath));
            CalibrationPlots.SimilarityHeatmap(result.LayerSimilarity, result.Schedule.Anchors, stem + ".similarity.png");
            CalibrationPlots.Importance(result.Importance, result.Schedule.Anchors, stem + ".importance.png");
            CalibrationPlots.AnchorCurve(result.Schedule.Choices!, result.Schedule.Anchors.Count, anchorCount is null ? options.TargetSimilarity : null, stem + ".anchors.png");
            stdout.WriteLine("| anchors | layers | score | weakest covered S | |");
            stdout.WriteLine("|---:|---|---:|---:|---|");
            foreach (var c in result.Schedule.Choices!)
            {
                string written = c.AnchorCount == result.Schedule.Anchors.Count ? "written" : "";
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {c.AnchorCount} | {string.Join(", ", c.Anchors)} | {c.Score:F4} | {c.WeakestSimilarity:F4} | {written} |"));
            }
            stdout.WriteLine($"wrote {outPath} (anchors {string.Join(", ", result.Schedule.Anchors)}), {stem}.similarity.png, {stem}.importance.png, {stem}.anchors.png");
            foreach (int count in counts.Distinct())
            {
                string path = string.Create(CultureInfo.InvariantCulture, $"{stem}.k{count}.json");
                ScheduleFile.Save(result.ScheduleFor(count), path);
                stdout.WriteLine($"wrote {path} ({count} anchors)");
            }
        });
        return command;
    }

    private static Command AnalyzeCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption();
        var haystack = new Option<string>("--haystack") { Description = "Directory of .txt essays for the pass-key prompts", Required = true };
        var lengths = OptionRules.Lengths("--lengths", "Prompt lengths, e.g. 2k,4k,8k", [2048, 4096, 8192]);
        var samples = new Option<int>("--samples") { Description = "Pass-key prompts per length (needle depths spread evenly)", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var seed = new Option<int>("--seed") { Description = "Seed for keys and haystack offsets", DefaultValueFactory = _ => 1 };
        var threads = ThreadsOption();
        var noMass = new Option<bool>("--no-mass") { Description = "Only the pass-key answers (skip the per-layer attention-mass measurement)" };
        var attention = AttentionOptions.Create();
        var command = new Command("analyze", "Measure a sparse attention policy against dense on pass-key prompts: captured attention mass per layer and greedy answers.")
        {
            model, haystack, lengths, samples, seed, threads, noMass,
        };
        attention.AddTo(command);
        command.SetAction(parse =>
        {
            using var backend = new CpuBackend(parse.GetValue(threads));
            using var dir = OpenModel(parse, parse.GetValue(model)!, backend);
            var policy = attention.Policy(parse, dir);
            var lengthList = parse.GetValue(lengths)!;
            KascadeAnalysisResult? result = null;
            WithProgress(stderr, progress =>
            {
                var tasks = lengthList.ToDictionary(l => $"{l} tokens", l => progress.AddTask($"{l} tokens", maxValue: parse.GetValue(samples)));
                result = KascadeAnalysis.Run(dir, Haystack.Load(parse.GetValue(haystack)!), policy, lengthList, parse.GetValue(samples), parse.GetValue(seed), !parse.GetValue(noMass), (name, done, _) => tasks[name].Value = done);
            });
            stdout.Write(KascadeAnalysis.ToMarkdown(result!, policy));
        });
        return command;
    }

    private static Command DevSetCommand(TextWriter stdout)
    {
        var model = ModelOption();
        var haystack = new Option<string>("--haystack") { Description = "Directory of .txt essays for retrieval prompts", Required = true };
        var longBench = new Option<string>("--longbench") { Description = "LongBench directory with hotpotqa/2wikimqa/musique .jsonl", Required = true };
        var count = new Option<int>("--count") { Description = "Prompts to write", DefaultValueFactory = _ => 24 }.AtLeast(1);
        var tokens = new Option<int>("--tokens") { Description = "Tokens a prompt (the paper's MuSiQue prompts average ~2.3k)", DefaultValueFactory = _ => 2300 }.AtLeast(64);
        var seed = new Option<int>("--seed") { Description = "Seed for needles, depths and offsets", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "JSONL file to write", Required = true }.WritableFile();
        var build = new Command("build", "Build a calibration development set: retrieval prompts over a haystack and LongBench multi-hop QA, cut to a token length.")
        {
            model, haystack, longBench, count, tokens, seed, output,
        };
        build.SetAction(parse =>
        {
            var tokenizer = Runtime.Tokenization.TextTokenizer.Load(Runtime.Loading.ModelLocation.Resolve(parse.GetValue(model)!));
            var examples = DevSetBuilder.Build(tokenizer, Haystack.Load(parse.GetValue(haystack)!), parse.GetValue(longBench)!, parse.GetValue(count), parse.GetValue(tokens), parse.GetValue(seed));
            DevSet.Write(parse.GetValue(output)!, examples.Select(e => new DevSetExample(e.Id, e.Prompt)));
            stdout.WriteLine($"wrote {examples.Count} prompts to {parse.GetValue(output)}");
        });
        return new Command("devset", "Development sets for calibration.") { build };
    }

    private static Command ScheduleCommand(TextWriter stdout)
    {
        var model = ModelOption();
        var headMap = new Option<string>("--head-map") { Description = "Official head map: .npy int32 [layers, kvHeads]", Required = true };
        var anchors = OptionRules.LayerList("--anchors", "Anchor layers, e.g. 0,2,8,13,14");
        var percent = new Option<double>("--topk-percent") { Description = "Top-k percent", DefaultValueFactory = _ => 10 }.Percent();
        var output = new Option<string>("--out") { Description = "Schedule file to write", Required = true }.WritableFile();
        var import = new Command("import", "Convert the official Kascade repository's head map and anchors into a schedule file.")
        {
            model, headMap, anchors, percent, output,
        };
        import.SetAction(parse =>
        {
            var anchorList = parse.GetValue(anchors)!;
            string modelPath = Runtime.Loading.ModelLocation.Resolve(parse.GetValue(model)!);
            var config = Runtime.Loading.ConfigLoader.Load(modelPath);
            var schedule = ScheduleFile.ImportOfficial(parse.GetValue(headMap)!, anchorList, config, ScheduleFile.ConfigHash(modelPath), parse.GetValue(percent));
            ScheduleFile.Save(schedule, parse.GetValue(output)!);
            stdout.WriteLine($"wrote {parse.GetValue(output)}");
        });
        return new Command("schedule", "Kascade schedule files.") { import };
    }
}
