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

    /// <summary>The global switch that prints stack traces and locates non-finite values layer by layer.</summary>
    private const string VerboseName = "--verbose";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var verbose = new Option<bool>(VerboseName) { Description = "On an error, also print its stack trace; on NaN or infinite logits, find the first layer where they appear", Recursive = true };
        var root = new RootCommand("Kascade for .NET: long-context LLM inference with Kascade sparse attention.") { verbose };
        root.Add(GenerateCommand(stdout, stderr));
        root.Add(BenchCommand(stdout, stderr));
        root.Add(CalibrateCommand(stdout, stderr));
        root.Add(DevSetCommand(stdout));
        root.Add(AnalyzeCommand(stdout, stderr));
        root.Add(FrontierCommand(stdout, stderr));
        root.Add(EvalCommand(args, stdout, stderr));
        root.Add(TestBackendCommand(stdout));
        root.Add(ScheduleCommand(stdout));
        root.Add(MethodsCommand(stdout));
        try
        {
            var parse = root.Parse(args);
            if (parse.Errors.Count > 0)
            {
                // One line naming every mistake, instead of the parser's full help text.
                stderr.WriteLine($"error: {string.Join("; ", parse.Errors.Select(e => Readable(e.Message)))} (see '{CommandPath(parse.CommandResult)} --help')");
                return ErrorReport.UserError;
            }
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            return ErrorReport.Write(e, args.Contains(VerboseName), stderr);
        }
    }

    /// <summary>A parser message in the words of the other errors: "--threads: 'abc' is not an integer", not a CLR type name.</summary>
    private static string Readable(string message)
    {
        var m = System.Text.RegularExpressions.Regex.Match(message, @"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']*)' as expected type '(?<type>[^']*)'");
        if (!m.Success)
        {
            // One line: the parser lists the allowed values of an option one per line.
            return System.Text.RegularExpressions.Regex.Replace(message.TrimEnd('.'), @"\s*\n\s*", " ");
        }
        string type = m.Groups["type"].Value;
        string what = type.Contains("Int32", StringComparison.Ordinal) ? "an integer"
            : type.Contains("Single", StringComparison.Ordinal) || type.Contains("Double", StringComparison.Ordinal) ? "a number"
            : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false"
            : $"a {type}";
        return $"{m.Groups["option"].Value}: '{m.Groups["value"].Value}' is not {what}";
    }

    /// <summary>"kascade bench generate" for the command a parse reached.</summary>
    private static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? r = result; r is System.CommandLine.Parsing.CommandResult c; r = c.Parent)
        {
            names.Add(c.Command is RootCommand ? "kascade" : c.Command.Name);
        }
        names.Reverse();
        return string.Join(' ', names);
    }

    private static Command GenerateCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption();
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var promptFile = new Option<FileInfo?>("--prompt-file") { Description = "Read the prompt from this UTF-8 file" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate (the model's context also ends the completion)", DefaultValueFactory = _ => 128 }.AtLeast(0);
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0f }.InRange(t => t >= 0, "≥ 0");
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: keep the smallest set of tokens with this much probability", DefaultValueFactory = _ => 1f }.InRange(p => p is > 0 and <= 1, "in (0, 1]");
        var topK = new Option<int>("--top-k") { Description = "Keep only the K most likely tokens; 0 = all", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var seed = new Option<int>("--seed") { Description = "Random seed for sampling", DefaultValueFactory = _ => 0 };
        var stop = new Option<string[]>("--stop") { Description = "Stop when this string appears (repeatable)", AllowMultipleArgumentsPerToken = false }.NonEmptyItems();
        var device = DeviceOption("cpu");
        var threads = ThreadsOption();
        var chunk = ChunkOption();
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
        command.SetAction(parse =>
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = parse.GetValue(maxNew),
                Sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topP), parse.GetValue(topK), parse.GetValue(seed)),
                Stop = parse.GetValue(stop) ?? [],
                PrefillChunk = parse.GetValue(chunk),
            };
            string text = parse.GetValue(prompt) ?? ReadPromptFile(parse.GetValue(promptFile)!);
            using var backend = Backends.Create(parse.GetValue(device)!, parse.GetValue(threads));
            using var dir = OpenModel(parse, parse.GetValue(model)!, backend);
            Generate(dir, text, options with { Attention = attention.Policy(parse, dir) }, stdout, stderr);
        });
        return command;
    }

    /// <summary><c>--model</c>: a model directory, a Hugging Face cache entry or a hub id found in the local cache.</summary>
    private static Option<string> ModelOption(bool required = true) => new("--model")
    {
        Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json or tokenizer.model), a hub cache entry, or a hub id such as org/name in the local cache",
        Required = required,
    };

    private static Option<string> DeviceOption(string defaultDevice) =>
        new Option<string>("--device") { Description = Backends.Description, DefaultValueFactory = _ => defaultDevice }.Device();

    private static Option<int?> ThreadsOption() => new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" }.AtLeast(1);

    private static Option<int> ChunkOption() => new Option<int>("--prefill-chunk") { Description = "Prefill chunk size in tokens", DefaultValueFactory = _ => 512 }.AtLeast(1);

    /// <summary>Opens a model directory; under --verbose, non-finite logits are traced to the first layer that makes them.</summary>
    private static ModelDirectory OpenModel(ParseResult parse, string path, IBackend backend)
    {
        var dir = ModelDirectory.Open(path, backend);
        dir.Model.LocateNonFinite = parse.GetValue<bool>(VerboseName);
        return dir;
    }

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
                $"prefill: {result.PrefillTokensPerSecond:F1} tokens/s, decode: " +
                (double.IsNaN(result.DecodeTokensPerSecond) ? "n/a (fewer than 2 tokens)" : $"{result.DecodeTokensPerSecond:F1} tokens/s"));
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
}
