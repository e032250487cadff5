using System.CommandLine;
using System.Globalization;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime;
using Kascade.Runtime.Attention;
using Kascade.Runtime.Diagnostics;
using Kascade.Runtime.Loading;

namespace Kascade.Cli;

public static partial class CliApp
{
    private static Command BenchCommand(TextWriter stdout, TextWriter stderr) =>
        new("bench", "Benchmarks.") { BenchGenerateCommand(stdout, stderr), BenchAttentionCommand(stdout, stderr), BenchMethodsCommand(stdout, stderr) };

    /// <summary>Anchors of the spread schedule a random-weight model's Kascade runs use by default: the paper's 5 of 32 layers.</summary>
    private const int SpreadAnchors = 5;

    private static Command BenchGenerateCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption(required: false);
        var random = new Option<string?>("--random-config") { Description = $"Instead of --model: random bf16 weights made on the device for a preset ({string.Join(", ", ShapePresets.Names)}) or a config.json" };
        var contexts = OptionRules.Lengths("--contexts", "Prompt lengths in tokens, e.g. 1k,4k,8k", [1024, 4096, 8192]);
        var decode = new Option<int>("--decode-tokens") { Description = "Decode steps timed after each prefill", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var threads = ThreadsOption();
        var chunk = ChunkOption();
        var device = DeviceOption("cpu");
        var graphs = new Option<bool>("--cuda-graphs") { Description = "On CUDA, replay each decode step as a recorded graph (false: launch every kernel from the host, for comparison)", DefaultValueFactory = _ => true };
        var methods = AttentionOptions.MethodList(new Option<string>("--attention") { Description = $"Attention methods timed one after another, comma-separated ({AttentionOptions.Names}); with --random-config the Kascade methods use --anchors anchors spread over the layers (random weights have nothing to calibrate)", DefaultValueFactory = _ => "dense" });
        var anchors = new Option<int>("--anchors") { Description = $"With --random-config: the Kascade methods' anchor layers, layer 0 included, spread over the layers (default {SpreadAnchors}, the paper's mix of 32 layers)", DefaultValueFactory = _ => SpreadAnchors }.AtLeast(1);
        var percent = new Option<double>("--topk-percent") { Description = "Top-k budget of the sparse methods in percent of the keys (with --model, the Kascade methods take the schedule's unless given)", DefaultValueFactory = _ => 10 }.Must(p => p is > 0 and <= 100, "a percent in (0, 100]");
        var refresh = new Option<int>("--anchor-refresh") { Description = "The Kascade methods' anchors select on every R-th decode step and keep their selection in between (1: every step, the paper)", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var json = new Option<string>("--json") { Description = "Also write the rows as JSON to this file" }.WritableFile();
        var generate = new Command("generate", "Time prefill and decode of the whole model at several context lengths (random prompt tokens, greedy).")
        {
            model, random, contexts, decode, threads, chunk, device, graphs, methods, percent, anchors, refresh, json,
        };
        generate.Validators.Add(result =>
        {
            if ((result.GetResult(model) is null) == (result.GetResult(random) is null))
            {
                result.AddError("give exactly one of --model or --random-config");
            }
            if (result.GetResult(model) is not null && result.GetResult(anchors) is { Implicit: false })
            {
                result.AddError("--anchors applies to --random-config: a model's Kascade schedule sets its anchors (--schedule in generate and eval)");
            }
            int steps = result.ValueOr(decode, 0);
            if (result.ValueOr(contexts, []).FirstOrDefault(l => l <= steps) is > 0 and var tooShort)
            {
                result.AddError($"--contexts {tooShort} leaves no prompt before {steps} --decode-tokens");
            }
        });
        generate.SetAction(parse =>
        {
            var lengths = parse.GetValue(contexts)!;
            using var backend = Backends.Create(parse.GetValue(device)!, parse.GetValue(threads));
            if (backend is Kascade.Cuda.CudaBackend cuda)
            {
                cuda.RecordSteps = parse.GetValue(graphs);
            }
            using var dir = parse.GetValue(model) is { } path ? OpenModel(parse, path, backend) : null;
            string label = (dir is null ? $"{parse.GetValue(random)} (random weights)" : dir.Name)
                + (backend is Kascade.Cuda.CudaBackend { RecordSteps: false } ? ", CUDA graphs off" : "");
            var randomConfig = dir is null ? ShapePresets.Load(parse.GetValue(random)!) : null;
            // The default spreads the paper's 5 anchors, fewer on a smaller model; a count asked for must fit.
            bool asked = parse.GetResult(anchors) is { Implicit: false };
            int spread = randomConfig is null ? SpreadAnchors : asked ? parse.GetValue(anchors) : Math.Min(SpreadAnchors, randomConfig.Layers);
            if (randomConfig is not null && spread > randomConfig.Layers)
            {
                throw new KascadeException($"--anchors {spread}: the model has {randomConfig.Layers} layers");
            }
            using var randomModel = randomConfig is null ? null : LlamaModel.Random(randomConfig, backend);
            var llama = dir?.Model ?? randomModel!;
            var names = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (dir is null && names.Any(n => AttentionMethods.Find(n).NeedsSchedule))
            {
                label += $", Kascade: {spread} anchors spread over the layers";
            }
            var policies = names.Select(name =>
            {
                double? p = parse.GetResult(percent) is { Implicit: false } ? parse.GetValue(percent) : null;
                var policy = dir is not null ? AttentionOptions.Build(name, null, p, ScorePooling.PostSoftmax, dir) : new AttentionPolicy(AttentionMethods.Find(name).Method, null, p ?? 10);
                if (dir is null && policy.NeedsSchedule)
                {
                    policy = policy with { Schedule = KascadeSchedule.Spread(llama.Config, spread, policy.TopKPercent) };
                }
                return policy.NeedsSchedule ? policy with { AnchorRefresh = parse.GetValue(refresh) } : policy;
            }).ToArray();
            var options = new GenerationBenchmarkOptions(lengths, parse.GetValue(decode), parse.GetValue(chunk), policies);
            IReadOnlyList<GenerationBenchmarkRow> rows = [];
            WithProgress(stderr, progress =>
            {
                var tasks = lengths.Distinct().ToDictionary(l => l, l => progress.AddTask($"context {l}", maxValue: l - options.DecodeTokens));
                rows = GenerationBenchmark.Run(llama, options, (length, done) => tasks[length].Value = done);
            });
            stdout.Write(GenerationBenchmark.ToMarkdown(label, llama, options, rows));
            if (parse.GetValue(json) is { } jsonPath)
            {
                File.WriteAllText(jsonPath, GenerationBenchmark.ToJson(label, llama, rows));
            }
        });
        return generate;
    }

    private static Command BenchMethodsCommand(TextWriter stdout, TextWriter stderr)
    {
        var config = new Option<string>("--config") { Description = $"The model shape: a preset ({string.Join(", ", ShapePresets.Names)}), a config.json or a model directory (no weights are read)", DefaultValueFactory = _ => "llama-3.1-8b" };
        var contexts = OptionRules.Lengths("--contexts", "Context lengths, e.g. 32k,128k", [32768, 131072]);
        var device = DeviceOption("cuda");
        var threads = ThreadsOption();
        var methods = AttentionOptions.MethodList(new Option<string>("--attention") { Description = $"Attention methods, comma-separated ({AttentionOptions.Names}); dense is always timed first", DefaultValueFactory = _ => "dense,kascade" });
        var percents = OptionRules.Percents("--topk-percent", "Top-k budgets of the sparse methods in percent of the keys, comma-separated (each sparse method is timed at each)", [10]);
        var anchors = OptionRules.Counts("--anchors", $"The Kascade methods' anchor counts, layer 0 included, each spread over the layers, comma-separated (default {SpreadAnchors}: the paper's mix of 32 layers)");
        var refresh = OptionRules.Counts("--anchor-refresh", "The Kascade methods' anchor refresh R, comma-separated: anchors select on every R-th decode step (default 1, the paper)");
        var precisions = OptionRules.Precisions("--score-precision", "The Kascade methods' anchor score precisions, comma-separated: exact (the default), bf16 (docs/kascade.md)");
        var baseline = AttentionOptions.BaselineOption();
        var runs = new Option<int>("--runs") { Description = "Timed cycles per method and context (median reported)", DefaultValueFactory = _ => 20 }.AtLeast(1);
        var json = new Option<string>("--json") { Description = "Also write the rows as JSON to this file (what kascade frontier reads)" }.WritableFile();
        var batch = new Option<int>("--batch") { Description = "Sequences decoding together, each with its own cache of the context (above 1: every method but oracle-topk, on the batched decode ops)", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var command = new Command("methods", "Time each attention method's decode-step attention over every layer of a model shape (random cache) beside dense in the same run: the per-layer cost of its mix of dense, selecting and reusing layers.")
        {
            config, contexts, device, threads, methods, percents, anchors, refresh, precisions, baseline, runs, batch, json,
        };
        command.SetAction(parse =>
        {
            var shape = ShapePresets.Load(parse.GetValue(config)!);
            // An option left out parses to no values (Counts has no default): the defaults apply.
            int[] anchorCounts = parse.GetValue(anchors) is { Length: > 0 } asked ? asked : [Math.Min(SpreadAnchors, shape.Layers)];
            int[] refreshes = parse.GetValue(refresh) is { Length: > 0 } r ? r : [1];
            var scorePrecisions = parse.GetValue(precisions) is { Length: > 0 } sp ? sp.Distinct().ToArray() : [ScorePrecision.Exact];
            if (anchorCounts.FirstOrDefault(a => a > shape.Layers) is > 0 and var tooMany)
            {
                throw new KascadeException($"--anchors {tooMany}: the model has {shape.Layers} layers");
            }
            var baselines = AttentionOptions.Baselines(parse, baseline);
            var names = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Prepend("dense").Distinct().ToList();
            bool kascade = names.Any(n => AttentionMethods.Find(n).NeedsSchedule);
            int sequences = parse.GetValue(batch);
            if (sequences > 1 && names.FirstOrDefault(n => AttentionMethods.Find(n).Method == AttentionMethod.OracleTopK) is { } unbatched)
            {
                throw new KascadeException($"--batch {sequences}: {unbatched} has no batched decode ops; a batch times every other method");
            }
            if (!kascade && (parse.GetResult(anchors) is { Implicit: false } || parse.GetResult(refresh) is { Implicit: false } || parse.GetResult(precisions) is { Implicit: false }))
            {
                throw new KascadeException("--anchors, --anchor-refresh and --score-precision apply to the Kascade methods; --attention names none");
            }
            if (kascade && parse.GetValue(contexts)!.FirstOrDefault(l => l < refreshes.Max()) is > 0 and var tooShort)
            {
                throw new KascadeException($"--contexts {tooShort}: a refresh of {refreshes.Max()} steps needs at least as many cached positions");
            }
            var policies = names.SelectMany(name =>
            {
                var info = AttentionMethods.Find(name);
                if (info.Method == AttentionMethod.Dense)
                {
                    return [AttentionPolicy.Dense];
                }
                // streamingllm's budget is its window, not a Top-k percent.
                var budgets = info.Method == AttentionMethod.StreamingLlm ? [10.0] : parse.GetValue(percents)!;
                var policies = budgets.Select(p => new AttentionPolicy(info.Method, null, p) { Baselines = baselines });
                return !info.NeedsSchedule ? policies : policies.SelectMany(p =>
                    anchorCounts.SelectMany(a => refreshes.SelectMany(r => scorePrecisions.Select(sp =>
                        p with { Schedule = KascadeSchedule.Spread(shape, a, p.TopKPercent), AnchorRefresh = r, ScorePrecision = sp }))));
            }).ToList();
            using var backend = Backends.Create(parse.GetValue(device)!, parse.GetValue(threads));
            // Before any timing: a policy the batched ops do not run is refused up front.
            foreach (var policy in policies)
            {
                AttentionOps.CheckBatched(backend, policy, shape, sequences);
            }
            var options = new MethodBenchmarkOptions(shape, parse.GetValue(config)!, parse.GetValue(contexts)!, policies, parse.GetValue(runs), sequences);
            IReadOnlyList<MethodBenchmarkRow> rows = [];
            WithProgress(stderr, progress =>
            {
                var tasks = options.Contexts.Distinct().ToDictionary(l => l, l => progress.AddTask($"context {l}", maxValue: policies.Count));
                rows = MethodBenchmark.Run(backend, options, (context, done) => tasks[context].Value = done);
            });
            stdout.Write(MethodBenchmark.ToMarkdown(backend, options, rows));
            if (parse.GetValue(json) is { } path)
            {
                File.WriteAllText(path, MethodBenchmark.ToJson(backend, options, rows));
            }
        });
        return command;
    }

    private static Command BenchAttentionCommand(TextWriter stdout, TextWriter stderr)
    {
        var phase = new Option<string>("--phase") { Description = "decode (one query over the cache) or prefill (causal, whole context)", DefaultValueFactory = _ => "decode" };
        phase.AcceptOnlyFromAmong("decode", "prefill");
        var contexts = OptionRules.Lengths("--contexts", "Context lengths, e.g. 8k,32k,128k", [8192, 32768, 131072]);
        var heads = new Option<int>("--heads") { Description = "Query heads", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var kvHeads = new Option<int>("--kv-heads") { Description = "KV heads", DefaultValueFactory = _ => 8 }.AtLeast(1);
        var headDim = new Option<int>("--head-dim") { Description = "Head dimension (a multiple of 32 up to 256)", DefaultValueFactory = _ => 128 }.Must(d => d is > 0 and <= 256 && d % 32 == 0, "a multiple of 32 up to 256");
        var runs = new Option<int>("--runs") { Description = "Timed runs (median reported)", DefaultValueFactory = _ => 20 }.AtLeast(1);
        var batch = new Option<int>("--batch") { Description = "Decode: sequences in the batch, each with its own cache of the context", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var kernel = new Option<string?>("--kernel") { Description = "Tuning: the attention kernel specialisation for this phase, over the device's default, e.g. warps=2,keys=16,stages=4 or kind=mma" };
        var flush = new Option<string>("--l2-flush") { Description = "How the L2 is emptied before each timed run: read (a 256 MiB buffer; clean lines) or write (a memset; dirty lines the timed kernel writes back)", DefaultValueFactory = _ => "read" };
        flush.AcceptOnlyFromAmong("read", "write");
        var splits = new Option<int?>("--splits") { Description = "Tuning: force the number of key splits (flash-decoding) instead of the heuristic's" }.AtLeast(1);
        var method = new Option<string>("--attention") { Description = "dense: our dense kernel; kascade: Kascade's kernels (layer 0, anchor, reuse; decode at --batch, or prefill in chunks) and a 32-layer schedule's per-layer average beside it (the other methods' decode steps: bench methods)", DefaultValueFactory = _ => "dense" };
        method.Validators.Add(result =>
        {
            if (OptionRules.TryValue(result, out string name) && name is not ("dense" or "kascade"))
            {
                result.AddError(AttentionMethods.TryFind(name, out _)
                    ? $"--attention {name}: bench attention times our dense and Kascade's kernels; a whole decode step of {name} is 'kascade bench methods --attention {name}'"
                    : $"--attention: unknown attention '{name}'; bench attention takes dense or kascade");
            }
        });
        // The spelling of the commands recorded in bench/results before session 31, kept so that they still run.
        var kascade = new Option<bool>("--kascade") { Description = "Same as --attention kascade", Hidden = true };
        var topK = new Option<double>("--topk-percent") { Description = "With --attention kascade: the Top-k budget in percent of the keys", DefaultValueFactory = _ => 10 }.Must(p => p is > 0 and <= 100, "a percent in (0, 100]");
        var peers = new Option<string?>("--peers") { Description = "Also run bench/peers' PyTorch scripts with this Python after our kernels (sdpa_peer.py; topk_peer.py with --attention kascade in decode), print their tables and our times beside theirs" };
        var peersDir = new Option<string>("--peers-dir") { Description = "Where the peer scripts are", DefaultValueFactory = _ => Path.Combine("bench", "peers") };
        var attention = new Command("attention", "Time our attention kernels on the GPU (CUDA events, L2 flushed, median); --peers runs PyTorch SDPA (and torch.topk) on the same shapes in the same run.")
        {
            phase, contexts, heads, kvHeads, headDim, runs, batch, kernel, splits, flush, method, kascade, topK, peers, peersDir,
        };
        attention.Validators.Add(result =>
        {
            if (result.ValueOr(heads, 1) % Math.Max(1, result.ValueOr(kvHeads, 1)) != 0)
            {
                result.AddError("--heads must be a multiple of --kv-heads");
            }
            if (result.ValueOr(phase, "decode") == "prefill" && result.ValueOr(batch, 1) > 1)
            {
                result.AddError("--batch is decode's: prefill times one sequence of each context");
            }
            if (result.ValueOr(kascade, false) && result.GetResult(method) is { Implicit: false } && result.ValueOr(method, "dense") != "kascade")
            {
                result.AddError("--kascade is --attention kascade; give one of them");
            }
        });
        attention.SetAction(parse =>
        {
            var options = new AttentionBenchmarkOptions(parse.GetValue(phase)!, parse.GetValue(contexts)!, parse.GetValue(heads), parse.GetValue(kvHeads), parse.GetValue(headDim), parse.GetValue(runs), parse.GetValue(batch),
                parse.GetValue(flush) == "write" ? Kascade.Cuda.Runtime.L2Flush.Write : Kascade.Cuda.Runtime.L2Flush.Read);
            double percent = parse.GetValue(topK);
            bool withKascade = parse.GetValue(kascade) || parse.GetValue(method) == "kascade";
            // Ours per context for the closing comparison, and our Top-k beside torch.topk's on the same rows: a decode
            // step's (batch × KV heads, what an anchor ranks) and issue 15's 512.
            var ours = new List<(int Context, string What, double Milliseconds)>();
            var oursTopK = new List<(int Context, int Rows, double Milliseconds)>();
            using (var backend = new Kascade.Cuda.CudaBackend())
            {
                backend.Tuning = Tuning(options.Phase, options.HeadDim, backend.Device.Hopper, parse.GetValue(kernel), parse.GetValue(splits));
                double copyGBps = backend.CopyBandwidthGBps();   // before the caches take the memory
                if (withKascade && options.Phase == "prefill")
                {
                    // The fast selection kernels are what this times (CudaBackend.FastSelection).
                    backend.FastSelection = true;
                    var prefillRows = KascadePrefillBenchmark.Run(backend, options, percent, context => stderr.WriteLine($"  context {context} done"));
                    stdout.Write(KascadePrefillBenchmark.ToMarkdown(backend, options, percent, prefillRows));
                    ours.AddRange(prefillRows.SelectMany(r => new[] { (r.Context, "our dense", r.Dense), (r.Context, "Kascade per-layer average", r.Average), (r.Context, "Kascade per-layer average, bf16 scores", r.AverageBf16) }));
                }
                else if (withKascade)
                {
                    backend.FastSelection = true;
                    var kascadeRows = KascadeAttentionBenchmark.Run(backend, options, percent, context => stderr.WriteLine($"  context {context} done"));
                    stdout.Write(KascadeAttentionBenchmark.ToMarkdown(backend, options, percent, kascadeRows, copyGBps));
                    ours.AddRange(kascadeRows.SelectMany(r => new[] { (r.Context, "our dense", r.Dense), (r.Context, "Kascade per-layer average", r.Average) }));
                    int stepRows = options.Batch * options.KvHeads;
                    // At batch 64 a step's rows are the 512: one comparison row.
                    oursTopK.AddRange(kascadeRows.SelectMany(r => new[] { (r.Context, Rows: stepRows, r.TopKDecode), (r.Context, Rows: KascadeBenchmarkRow.WideRows, r.TopKWide) })
                        .DistinctBy(t => (t.Context, t.Rows)));
                }
                else
                {
                    var rows = AttentionBenchmark.Run(backend, options, context => stderr.WriteLine($"  context {context} done"));
                    stdout.Write(AttentionBenchmark.ToMarkdown(backend, options, rows, copyGBps));
                    ours.AddRange(rows.Select(r => (r.Context, "our dense", r.Milliseconds)));
                }
            }
            // After our backend has given its memory back: PyTorch allocates the same caches.
            if (parse.GetValue(peers) is { } python)
            {
                string dir = parse.GetValue(peersDir)!;
                string Invariant(double value) => value.ToString(CultureInfo.InvariantCulture);
                string contextList = string.Join(',', options.Contexts);
                string[] sdpaArguments = ["--phase", options.Phase, "--contexts", contextList, "--heads", Invariant(options.Heads), "--kv-heads", Invariant(options.KvHeads),
                    "--head-dim", Invariant(options.HeadDim), "--runs", Invariant(options.Runs), "--batch", Invariant(options.Batch), "--l2-flush", parse.GetValue(flush)!];
                var peerRows = Peer("sdpa_peer.py", sdpaArguments, "PyTorch SDPA").ToList();
                stdout.WriteLine();
                stdout.Write(PeerBenchmarks.Comparison(ours, peerRows));
                if (oursTopK.Count > 0)
                {
                    string rowCounts = string.Join(',', oursTopK.Select(t => t.Rows).Distinct().Select(r => Invariant(r)));
                    var topKRows = Peer("topk_peer.py", ["--contexts", contextList, "--topk-percent", Invariant(percent), "--rows", rowCounts, "--runs", Invariant(options.Runs)], "torch.topk");
                    stdout.WriteLine();
                    stdout.Write(PeerBenchmarks.TopKComparison(oursTopK, topKRows));
                }

                IReadOnlyList<PeerRow> Peer(string script, string[] arguments, string title)
                {
                    string path = Path.Combine(dir, script);
                    string output = PeerBenchmarks.Run(python, path, arguments, TimeSpan.FromMinutes(10));
                    stdout.WriteLine();
                    stdout.WriteLine($"Same run, {title} (`{python} {path} {string.Join(' ', arguments)}`):");
                    stdout.WriteLine();
                    stdout.Write(output);
                    return PeerBenchmarks.Parse(output);
                }
            }
        });
        return attention;
    }

    /// <summary>The attention overrides of <c>bench attention --kernel/--splits</c> for <paramref name="phase"/>.</summary>
    private static Kascade.Cuda.Heuristics.AttentionTuning Tuning(string phase, int headDim, bool hopper, string? kernel, int? splits)
    {
        Kascade.Cuda.Heuristics.AttentionKernel? parsed = null;
        if (kernel is not null)
        {
            var defaults = Kascade.Cuda.Heuristics.AttentionKernel.For(phase == "decode" ? 1 : int.MaxValue, headDim, hopper);
            try
            {
                parsed = Kascade.Cuda.Heuristics.AttentionKernel.Parse(kernel, defaults, headDim);
            }
            catch (FormatException e)
            {
                throw new KascadeException($"--kernel: {e.Message}");
            }
        }
        return phase == "decode" ? new(Decode: parsed, Splits: splits) : new(Prefill: parsed, Splits: splits);
    }

    private static Command TestBackendCommand(TextWriter stdout)
    {
        var device = DeviceOption("cuda");
        var model = new Option<string?>("--model") { Description = "Also replay this model directory's golden_hf.json on the device, and run every attention method the device runs against the CPU" };
        var only = OptionRules.Choices("--only", $"Run only these groups, comma-separated: {string.Join(", ", TestBackendGroups.Select(g => g.Name))} (every op's grid, the selection grids on the exact kernels, the Top-k kernels alone, with --model the golden replay and every method); all by default", TestBackendGroups);
        var command = new Command("test-backend", "Run every backend op on the device and on the CPU with the same inputs over shape grids; exit 1 on any mismatch.")
        {
            device, model, only,
        };
        command.Validators.Add(result =>
        {
            if (result.ValueOr(only, null) is { } groups && groups.Contains(TestBackendGroup.Model) && result.ValueOr(model, null) is null)
            {
                result.AddError("--only model needs --model DIR: the golden replay and the methods run on a model");
            }
        });
        command.SetAction(parse =>
        {
            using var reference = new CpuBackend();
            using var candidate = Backends.Create(parse.GetValue(device)!, null);
            stdout.WriteLine($"reference: {reference.Name}, candidate: {candidate.Name}");
            stdout.WriteLine("| op | case | max error | allowed | |");
            stdout.WriteLine("|---|---|---:|---:|---|");
            void Print(ParityResult r) =>
                stdout.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"| {r.Op} | {r.Case} | {r.MaxError:G3} | {r.Allowed:G3} | {(r.NotRun is { } why ? $"not run: {why}" : r.Passed ? "ok" : "FAIL")} |"));
            var groups = parse.GetValue(only) ?? [.. TestBackendGroups.Select(g => g.Value)];
            var results = groups.Contains(TestBackendGroup.Ops) ? BackendParity.Run(reference, candidate, Print).ToList() : [];
            // The exact first kernels (the fast selection kernels are the default): the select/attend grids again with them.
            var fastCuda = candidate is Kascade.Cuda.CudaBackend { FastSelection: true } c ? c : null;
            if (fastCuda is not null && groups.Contains(TestBackendGroup.Exact))
            {
                results.AddRange(fastCuda.WithExactKernels(() => BackendParity.RunSelection(reference, candidate, r => Print(r with { Op = $"exact {r.Op}" })).Select(r => r with { Op = $"exact {r.Op}" }).ToList()));
            }
            if (candidate is Kascade.Cuda.CudaBackend cuda && groups.Contains(TestBackendGroup.TopK))
            {
                // The Top-k kernels alone: wide_topk (many rows: rows no longer than its candidate store, rows whose k-th
                // digit's candidates it stores, rows of ties it counts down to the whole key), cluster_topk (few long rows),
                // and select_topk (the exact kernels).
                foreach (var (rows, cols) in Kascade.Cuda.TopKRowsCheck.Shapes)
                {
                    foreach (string kind in Kascade.Cuda.TopKRowsCheck.Kinds)
                    {
                        var r = new ParityResult("top-k rows", $"{rows} rows × {cols} {kind}", Kascade.Cuda.TopKRowsCheck.Mismatches(cuda, rows, cols, 10, kind), 0);
                        Print(r);
                        results.Add(r);
                        if (fastCuda is not null)
                        {
                            var exact = new ParityResult("exact top-k rows", r.Case, fastCuda.WithExactKernels(() => Kascade.Cuda.TopKRowsCheck.Mismatches(cuda, rows, cols, 10, kind)), 0);
                            Print(exact);
                            results.Add(exact);
                        }
                    }
                }
            }
            if (parse.GetValue(model) is { } path && groups.Contains(TestBackendGroup.Model))
            {
                using var dir = OpenModel(parse, path, candidate);
                using var onReference = OpenModel(parse, path, reference);
                foreach (var r in GoldenCheck.Run(dir).Concat(MethodParity.Run(onReference, dir)))
                {
                    Print(r);
                    results.Add(r);
                }
                if (fastCuda is not null)
                {
                    // Printed as each method finishes, as above.
                    results.AddRange(fastCuda.WithExactKernels(() => MethodParity.Run(onReference, dir).Select(r => r with { Op = $"exact {r.Op}" }).Select(r =>
                    {
                        Print(r);
                        return r;
                    }).ToList()));
                }
            }
            int failures = results.Count(r => !r.Passed), notRun = results.Count(r => r.NotRun is not null);
            stdout.WriteLine($"{results.Count - failures - notRun} passed, {failures} failed{(notRun > 0 ? $", {notRun} not run" : "")}");
            return failures > 0 ? ErrorReport.UserError : 0;
        });
        return command;
    }

    /// <summary><c>test-backend --only</c>'s groups by name, in the order they run.</summary>
    private static readonly (string Name, TestBackendGroup Value)[] TestBackendGroups =
        [("ops", TestBackendGroup.Ops), ("exact", TestBackendGroup.Exact), ("top-k", TestBackendGroup.TopK), ("model", TestBackendGroup.Model)];
}

/// <summary>A group of <c>test-backend</c>'s parity suite.</summary>
internal enum TestBackendGroup
{
    Ops,
    Exact,
    TopK,
    Model,
}
