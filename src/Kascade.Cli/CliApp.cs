using System.CommandLine;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime;
using Kascade.Runtime.Diagnostics;
using Kascade.Runtime.Loading;
using Kascade.Runtime.Generation;
using Spectre.Console;

namespace Kascade.Cli;

/// <summary>The <c>kascade</c> command line: parsing and wiring only; the work is in the libraries.</summary>
public static partial class CliApp
{
    /// <summary>Prompts of more tokens than this show a prefill progress bar.</summary>
    private const int ProgressThresholdTokens = 1024;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("Kascade for .NET: long-context LLM inference with Kascade sparse attention.");
        root.Add(GenerateCommand(stdout, stderr));
        root.Add(BenchCommand(stdout, stderr));
        root.Add(CalibrateCommand(stdout, stderr));
        root.Add(DevSetCommand(stdout, stderr));
        root.Add(AnalyzeCommand(stdout, stderr));
        root.Add(EvalCommand(args, stdout, stderr));
        root.Add(TestBackendCommand(stdout, stderr));
        root.Add(ScheduleCommand(stdout, stderr));
        var parse = root.Parse(args);
        return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
    }

    private static Command GenerateCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json or tokenizer.model)", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var promptFile = new Option<FileInfo?>("--prompt-file") { Description = "Read the prompt from this UTF-8 file" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: keep the smallest set of tokens with this much probability", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Keep only the K most likely tokens; 0 = all", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Random seed for sampling", DefaultValueFactory = _ => 0 };
        var stop = new Option<string[]>("--stop") { Description = "Stop when this string appears (repeatable)", AllowMultipleArgumentsPerToken = false };
        var device = new Option<string>("--device") { Description = Backends.Description, DefaultValueFactory = _ => "cpu" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill chunk size in tokens", DefaultValueFactory = _ => 512 };
        var attention = AttentionOptions.Create();

        var command = new Command("generate", "Stream a completion of a prompt, then print token counts and speeds.")
        {
            model, prompt, promptFile, maxNew, temperature, topP, topK, seed, stop, device, threads, chunk,
        };
        attention.AddTo(command);
        command.Validators.Add(result =>
        {
            bool hasPrompt = result.GetResult(prompt) is not null, hasFile = result.GetResult(promptFile) is not null;
            if (hasPrompt == hasFile)
            {
                result.AddError("give exactly one of --prompt or --prompt-file");
            }
        });
        command.SetAction(parse => Guard(stderr, () =>
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = NonNegative(parse.GetValue(maxNew), "--max-new-tokens"),
                Sampling = new SamplingOptions(
                    Temperature: NonNegative(parse.GetValue(temperature), "--temperature"),
                    TopP: parse.GetValue(topP) is > 0f and <= 1f and var p ? p : throw new KascadeException("--top-p must be in (0, 1]"),
                    TopK: NonNegative(parse.GetValue(topK), "--top-k"),
                    Seed: parse.GetValue(seed)),
                Stop = parse.GetValue(stop) ?? [],
                PrefillChunk = parse.GetValue(chunk) > 0 ? parse.GetValue(chunk) : throw new KascadeException("--prefill-chunk must be positive"),
            };
            string text = parse.GetValue(prompt) ?? ReadPromptFile(parse.GetValue(promptFile)!);
            using var backend = Backends.Create(parse.GetValue(device)!, parse.GetValue(threads));
            using var dir = ModelDirectory.Open(parse.GetValue(model)!, backend);
            Generate(dir, text, options with { Attention = attention.Policy(parse, dir) }, stdout, stderr);
        }));
        return command;
    }

    private static Command BenchCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model directory" };
        var random = new Option<string?>("--random-config") { Description = $"Instead of --model: random bf16 weights made on the device for a preset ({string.Join(", ", ShapePresets.Names)}) or a config.json" };
        var contexts = new Option<string>("--contexts") { Description = "Prompt lengths in tokens, e.g. 1k,4k,8k", DefaultValueFactory = _ => "1k,4k,8k" };
        var decode = new Option<int>("--decode-tokens") { Description = "Decode steps timed after each prefill", DefaultValueFactory = _ => 32 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill chunk size in tokens", DefaultValueFactory = _ => 512 };
        var device = new Option<string>("--device") { Description = Backends.Description, DefaultValueFactory = _ => "cpu" };
        var graphs = new Option<bool>("--cuda-graphs") { Description = "On CUDA, replay each decode step as a recorded graph (false: launch every kernel from the host, for comparison)", DefaultValueFactory = _ => true };
        var generate = new Command("generate", "Time prefill and decode of the whole model at several context lengths (random prompt tokens, greedy).")
        {
            model, random, contexts, decode, threads, chunk, device, graphs,
        };
        generate.Validators.Add(result =>
        {
            if ((result.GetResult(model) is null) == (result.GetResult(random) is null))
            {
                result.AddError("give exactly one of --model or --random-config");
            }
        });
        generate.SetAction(parse => Guard(stderr, () =>
        {
            var lengths = ParseLengths(parse.GetValue(contexts)!);
            using var backend = Backends.Create(parse.GetValue(device)!, parse.GetValue(threads));
            if (backend is Kascade.Cuda.CudaBackend cuda)
            {
                cuda.RecordSteps = parse.GetValue(graphs);
            }
            using var dir = parse.GetValue(model) is { } path ? ModelDirectory.Open(path, backend) : null;
            string label = (dir is null ? $"{parse.GetValue(random)} (random weights)" : Path.GetFileName(Path.TrimEndingDirectorySeparator(dir.Path)))
                + (backend is Kascade.Cuda.CudaBackend { RecordSteps: false } ? ", CUDA graphs off" : "");
            using var randomModel = dir is null ? LlamaModel.Random(ShapePresets.Load(parse.GetValue(random)!), backend) : null;
            var llama = dir?.Model ?? randomModel!;
            var options = new GenerationBenchmarkOptions(lengths, NonNegative(parse.GetValue(decode), "--decode-tokens"), parse.GetValue(chunk));
            IReadOnlyList<GenerationBenchmarkRow> rows = [];
            WithProgress(stderr, progress =>
            {
                var tasks = lengths.ToDictionary(l => l, l => progress.AddTask($"context {l}", maxValue: l - options.DecodeTokens));
                rows = GenerationBenchmark.Run(llama, options, (length, done) => tasks[length].Value = done);
            });
            stdout.Write(GenerationBenchmark.ToMarkdown(label, llama, options, rows));
        }));
        var phase = new Option<string>("--phase") { Description = "decode (one query over the cache) or prefill (causal, whole context)", DefaultValueFactory = _ => "decode" };
        phase.AcceptOnlyFromAmong("decode", "prefill");
        var attentionContexts = new Option<string>("--contexts") { Description = "Context lengths, e.g. 8k,32k,128k", DefaultValueFactory = _ => "8k,32k,128k" };
        var heads = new Option<int>("--heads") { Description = "Query heads", DefaultValueFactory = _ => 32 };
        var kvHeads = new Option<int>("--kv-heads") { Description = "KV heads", DefaultValueFactory = _ => 8 };
        var headDim = new Option<int>("--head-dim") { Description = "Head dimension (64 or 128)", DefaultValueFactory = _ => 128 };
        var runs = new Option<int>("--runs") { Description = "Timed runs (median reported)", DefaultValueFactory = _ => 20 };
        var batch = new Option<int>("--batch") { Description = "Decode: sequences in the batch, each with its own cache of the context", DefaultValueFactory = _ => 1 };
        var kernel = new Option<string?>("--kernel") { Description = "Tuning: the attention kernel specialisation for this phase, over the device's default, e.g. warps=2,keys=16,stages=4 or kind=mma" };
        var flush = new Option<string>("--l2-flush") { Description = "How the L2 is emptied before each timed run: read (a 256 MiB buffer; clean lines) or write (a memset; dirty lines the timed kernel writes back)", DefaultValueFactory = _ => "read" };
        flush.AcceptOnlyFromAmong("read", "write");
        var splits = new Option<int?>("--splits") { Description = "Tuning: force the number of key splits (flash-decoding) instead of the heuristic's" };
        var attention = new Command("attention", "Time our dense attention kernels on the GPU (CUDA events, L2 flushed, median); compare with bench/peers/sdpa_peer.py in the same run.")
        {
            phase, attentionContexts, heads, kvHeads, headDim, runs, batch, kernel, splits, flush,
        };
        attention.SetAction(parse => Guard(stderr, () =>
        {
            using var backend = new Kascade.Cuda.CudaBackend();
            var options = new AttentionBenchmarkOptions(parse.GetValue(phase)!, ParseLengths(parse.GetValue(attentionContexts)!), parse.GetValue(heads), parse.GetValue(kvHeads), parse.GetValue(headDim), parse.GetValue(runs), parse.GetValue(batch),
                parse.GetValue(flush) == "write" ? Kascade.Cuda.Runtime.L2Flush.Write : Kascade.Cuda.Runtime.L2Flush.Read);
            if (options.Heads % options.KvHeads != 0 || options.HeadDim % 32 != 0)
            {
                throw new KascadeException("--heads must be a multiple of --kv-heads and --head-dim a multiple of 32");
            }
            backend.Tuning = Tuning(options.Phase, options.HeadDim, backend.Device.Hopper, parse.GetValue(kernel), parse.GetValue(splits));
            double copyGBps = backend.CopyBandwidthGBps();   // before the caches take the memory
            var rows = AttentionBenchmark.Run(backend, options, context => stderr.WriteLine($"  context {context} done"));
            stdout.Write(AttentionBenchmark.ToMarkdown(backend, options, rows, copyGBps));
        }));
        return new Command("bench", "Benchmarks.") { generate, attention };
    }

    /// <summary>The attention overrides of <c>bench attention --kernel/--splits</c> for <paramref name="phase"/>.</summary>
    private static Kascade.Cuda.Heuristics.AttentionTuning Tuning(string phase, int headDim, bool hopper, string? kernel, int? splits)
    {
        if (splits is <= 0)
        {
            throw new KascadeException("--splits must be positive");
        }
        Kascade.Cuda.Heuristics.AttentionKernel? parsed = null;
        if (kernel is not null)
        {
            var defaults = Kascade.Cuda.Heuristics.AttentionKernel.For(phase == "decode" ? 1 : int.MaxValue, headDim, hopper);
            try
            {
                parsed = Kascade.Cuda.Heuristics.AttentionKernel.Parse(kernel, defaults);
            }
            catch (FormatException e)
            {
                throw new KascadeException($"--kernel: {e.Message}");
            }
        }
        return phase == "decode" ? new(Decode: parsed, Splits: splits) : new(Prefill: parsed, Splits: splits);
    }

    private static Command TestBackendCommand(TextWriter stdout, TextWriter stderr)
    {
        var device = new Option<string>("--device") { Description = Backends.Description, DefaultValueFactory = _ => "cuda" };
        var model = new Option<string?>("--model") { Description = "Also replay this model directory's golden_hf.json on the device" };
        var command = new Command("test-backend", "Run every backend op on the device and on the CPU with the same inputs over shape grids; exit 1 on any mismatch.")
        {
            device, model,
        };
        command.SetAction(parse =>
        {
            int failures = 0;
            int code = Guard(stderr, () =>
            {
                using var reference = new CpuBackend();
                using var candidate = Backends.Create(parse.GetValue(device)!, null);
                stdout.WriteLine($"reference: {reference.Name}, candidate: {candidate.Name}");
                stdout.WriteLine("| op | case | max error | allowed | |");
                stdout.WriteLine("|---|---|---:|---:|---|");
                void Print(ParityResult r) =>
                    stdout.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"| {r.Op} | {r.Case} | {r.MaxError:G3} | {r.Allowed:G3} | {(r.Passed ? "ok" : "FAIL")} |"));
                var results = BackendParity.Run(reference, candidate, Print).ToList();
                if (candidate is Kascade.Cuda.CudaBackend cuda)
                {
                    foreach (var (batch, keys, group) in new[] { (5, 700, 4), (64, 300, 8), (3, 2000, 1) })
                    {
                        var r = new ParityResult("batched decode", $"batch {batch} keys {keys} group {group}", Kascade.Cuda.BatchedDecodeCheck.MaxError(reference, cuda, batch, keys, 8 * group, 8, 128), 1e-3);
                        Print(r);
                        results.Add(r);
                    }
                }
                if (parse.GetValue(model) is { } path)
                {
                    using var dir = ModelDirectory.Open(path, candidate);
                    var golden = GoldenCheck.Run(dir);
                    foreach (var r in golden)
                    {
                        Print(r);
                    }
                    results.AddRange(golden);
                }
                failures = results.Count(r => !r.Passed);
                stdout.WriteLine($"{results.Count - failures} passed, {failures} failed");
            });
            return code != 0 ? code : failures > 0 ? 1 : 0;
        });
        return command;
    }

    /// <summary>Parses "1k,4k,8192" into token counts.</summary>
    private static int[] ParseLengths(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t =>
            t.EndsWith('k') && int.TryParse(t[..^1], out int k) && k > 0 ? k * 1024
            : int.TryParse(t, out int n) && n > 0 ? n
            : throw new KascadeException($"'{t}' is not a context length (examples: 1k, 4096)")).ToArray();

    private static void Generate(ModelDirectory dir, string prompt, GenerationOptions options, TextWriter stdout, TextWriter stderr)
    {
        var generator = new Generator(dir.Model, dir.Tokenizer);
        int[] ids = generator.Tokenize(prompt);
        Completion completion;
        if (ids.Length > ProgressThresholdTokens)
        {
            Completion? prefilled = null;
            WithProgress(stderr, progress =>
            {
                var task = progress.AddTask("prefill", maxValue: ids.Length);
                prefilled = generator.Prefill(ids, options, (done, _) => task.Value = done);
            });
            completion = prefilled!;
        }
        else
        {
            completion = generator.Prefill(ids, options);
        }
        using (completion)
        {
            var result = completion.Decode(piece =>
            {
                stdout.Write(piece);
                stdout.Flush();
            });
            stdout.WriteLine();
            stderr.WriteLine(
                $"prompt tokens: {result.PromptTokens}, generated tokens: {result.GeneratedTokens} ({Describe(result.StopReason)}), " +
                $"prefill: {result.PrefillTokensPerSecond:F1} tokens/s, decode: {result.DecodeTokensPerSecond:F1} tokens/s");
        }
    }

    /// <summary>Runs <paramref name="work"/> under a Spectre.Console progress display on stderr (stdout stays clean for results).</summary>
    private static void WithProgress(TextWriter stderr, Action<ProgressContext> work) =>
        AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) }).Progress().Start(work);

    private static string Describe(StopReason reason) => reason switch
    {
        StopReason.EndOfSequence => "end of sequence",
        StopReason.StopString => "stop string",
        StopReason.MaxTokens => "max new tokens",
        StopReason.ContextFull => "context full",
        _ => reason.ToString(),
    };

    private static string ReadPromptFile(FileInfo file)
    {
        if (!file.Exists)
        {
            throw new KascadeException($"prompt file not found: {file.FullName}");
        }
        return File.ReadAllText(file.FullName);
    }

    private static T NonNegative<T>(T value, string name)
        where T : System.Numerics.INumber<T> =>
        T.IsNegative(value) ? throw new KascadeException($"{name} must not be negative") : value;

    /// <summary>User mistakes (<see cref="KascadeException"/>, unreadable files) become one line on stderr and exit code 1.</summary>
    private static int Guard(TextWriter stderr, Action action)
    {
        try
        {
            action();
            return 0;
        }
        catch (Exception e) when (e is KascadeException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
