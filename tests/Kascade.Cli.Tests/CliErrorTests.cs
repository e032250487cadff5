using System.Text;
using System.Text.Json.Nodes;
using Kascade.Cli;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cli.Tests;

/// <summary>
/// Every bad input the hardening issue lists, through the real command line: one <c>error:</c> line, exit code 1, no
/// stack trace — and the inputs that are valid (a huge --max-new-tokens) run. Model files are mutated copies of a tiny
/// fixture model with the embedded model's tokenizer.
/// </summary>
public sealed class CliErrorTests : IClassFixture<CliErrorTests.BadFiles>
{
    private readonly BadFiles _files;

    public CliErrorTests(BadFiles files) => _files = files;

    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    private static void OneLine(string expected, params string[] args)
    {
        var (code, _, err) = Run(args);
        Assert.True(code == 1, $"exit {code}: {err}");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, err);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", err);
    }

    /// <summary>Broken copies of a tiny model and broken head maps, made once for the class.</summary>
    public sealed class BadFiles : IDisposable
    {
        private readonly TempDirectory _root = new();

        public string Model(string name) => Path.Combine(_root.Path, name);

        public string Npy(string name) => Path.Combine(_root.Path, name + ".npy");

        public BadFiles()
        {
            string Copy(string name, Action<JsonObject>? config = null, Action<JsonObject>? tokenizer = null, Func<byte[], byte[]>? weights = null)
            {
                string dir = Directory.CreateDirectory(Model(name)).FullName;
                foreach (var f in Directory.GetFiles(TestPaths.TinyModel("llama-linear-tied")))
                {
                    File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
                }
                Edit(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(dir, "config.json")), config);
                Edit(Path.Combine(dir, "tokenizer.json"), File.ReadAllText(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json")), tokenizer);
                if (weights is not null)
                {
                    string w = Path.Combine(dir, "model.safetensors");
                    File.WriteAllBytes(w, weights(File.ReadAllBytes(w)));
                }
                return dir;
            }

            Copy("valid");
            Copy("eos-string", c => c["eos_token_id"] = "2");
            Copy("eos-huge", c => c["eos_token_id"] = 3000000000);
            Copy("bos-object", c => c["bos_token_id"] = new JsonObject());
            Copy("architectures-number", c => c["architectures"] = new JsonArray(5));
            Copy("eps-string", c => c["rms_norm_eps"] = "abc");
            Copy("eps-negative", c => c["rms_norm_eps"] = -1e-6);
            Copy("theta-string", c => c["rope_theta"] = "big");
            Copy("theta-zero", c => c["rope_theta"] = 0);
            Copy("factor-zero", c => c["rope_parameters"]!["factor"] = 0);
            Copy("fewer-layers", c => c["num_hidden_layers"] = 2);
            Copy("tokenizer-model-number", tokenizer: t => t["model"] = 5);
            Copy("tokenizer-type-number", tokenizer: t => t["model"]!["type"] = 5);
            Copy("tokenizer-decoder-type-list", tokenizer: t => t["decoder"]!["type"] = new JsonArray());
            Copy("tokenizer-backtracking", tokenizer: t => t["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(a+)+$");
            Copy("key-not-utf8", weights: InvalidUtf8Key);
            Copy("offsets-huge", weights: HugeOffsets);
            Copy("nan-weights", weights: NanNorm);

            File.WriteAllBytes(Npy("shape-not-numeric"), NpyWriter.Bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (x, 2), }", new byte[4]));
            File.WriteAllBytes(Npy("int64-beyond-int32"), NpyWriter.Bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", NpyWriter.Int64s(long.MaxValue)));
            File.WriteAllBytes(Npy("header-past-file"), NpyWriter.Bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", new byte[4], declaredLength: 60000));
            File.WriteAllBytes(Npy("negative-v2-length"), NpyWriter.Bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", new byte[4], major: 2, declaredLength: uint.MaxValue));
            File.WriteAllBytes(Npy("unterminated-shape"), NpyWriter.Bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (1, ", new byte[4]));
        }

        private static void Edit(string path, string json, Action<JsonObject>? edit)
        {
            var node = JsonNode.Parse(json)!.AsObject();
            edit?.Invoke(node);
            File.WriteAllText(path, node.ToJsonString());
        }

        /// <summary>The first tensor name's first byte replaced by a lone UTF-8 continuation byte.</summary>
        private static byte[] InvalidUtf8Key(byte[] file)
        {
            int at = Encoding.Latin1.GetString(file, 8, 200).IndexOf("\"model.", StringComparison.Ordinal) + 9;
            file[at] = 0x80;
            return file;
        }

        /// <summary>The first data_offsets rewritten near 2^63 (same length, so the header stays the same size).</summary>
        private static byte[] HugeOffsets(byte[] file)
        {
            long headerLength = BitConverter.ToInt64(file);
            string header = Encoding.Latin1.GetString(file, 8, (int)headerLength);
            int open = header.IndexOf("\"data_offsets\":[", StringComparison.Ordinal) + "\"data_offsets\":[".Length;
            int close = header.IndexOf(']', open);
            string replacement = "9223372036854775000,9223372036854775807";
            header = header[..open] + replacement + header[close..];
            var bytes = new byte[8 + header.Length + file.Length - 8 - (int)headerLength];
            BitConverter.TryWriteBytes(bytes, (long)header.Length);
            Encoding.Latin1.GetBytes(header).CopyTo(bytes, 8);
            file.AsSpan(8 + (int)headerLength).CopyTo(bytes.AsSpan(8 + header.Length));
            return bytes;
        }

        /// <summary>The final norm's weights set to NaN.</summary>
        private static byte[] NanNorm(byte[] file)
        {
            string path = Path.GetTempFileName();
            File.WriteAllBytes(path, file);
            long offset, length;
            using (var st = SafeTensorsFile.Open(path))
            {
                (offset, length) = (st.Tensors["model.norm.weight"].DataOffset, st.Tensors["model.norm.weight"].ByteLength);
            }
            File.Delete(path);
            for (long i = offset; i < offset + length; i += 2)
            {
                (file[i], file[i + 1]) = (0xC0, 0x7F);
            }
            return file;
        }

        public void Dispose() => _root.Dispose();
    }

    public static TheoryData<string, string> BadModels => new()
    {
        { "eos-string", "config.json: 'eos_token_id' must be an integer in [0, 255], not a string (\"2\")" },
        { "eos-huge", "config.json: 'eos_token_id' must be an integer in [0, 255], not 3000000000" },
        { "bos-object", "config.json: 'bos_token_id' must be an integer in [0, 255], not an object" },
        { "architectures-number", "config.json: 'architectures[0]' must be a string, not 5" },
        { "eps-string", "config.json: 'rms_norm_eps' must be a finite number > 0" },
        { "eps-negative", "config.json: 'rms_norm_eps' must be a finite number > 0, not -1E-06" },
        { "theta-string", "config.json: 'rope_theta' must be a finite number > 0, not a string (\"big\")" },
        { "theta-zero", "config.json: 'rope_theta' must be a finite number > 0, not 0" },
        { "factor-zero", "config.json: 'rope_parameters.factor' must be a finite number > 0, not 0" },
        { "fewer-layers", "config.json has num_hidden_layers = 2, but the checkpoint holds layers up to 2" },
        { "tokenizer-model-number", "tokenizer.json: 'model' must be an object, not 5" },
        { "tokenizer-type-number", "tokenizer.json: 'model.type' must be a string, not 5" },
        { "tokenizer-decoder-type-list", "tokenizer.json: 'decoder.type' must be a string, not a list of 0" },
        { "tokenizer-backtracking", "catastrophic backtracking" },
        { "key-not-utf8", "model.safetensors: the safetensors header is not valid UTF-8 text" },
        { "offsets-huge", "data offsets [9223372036854775000, 9223372036854775807]" },
        { "nan-weights", "the model produced NaN or infinite logits at position" },
    };

    [Theory]
    [MemberData(nameof(BadModels))]
    public void A_broken_model_directory_is_one_error_line(string model, string expected) =>
        OneLine(expected, "generate", "--model", _files.Model(model), "--prompt", new string('a', 33) + "!", "--max-new-tokens", "2");

    [Fact]
    public void Verbose_names_the_layer_of_NaN_logits_and_shows_the_trace()
    {
        var (code, _, err) = Run("generate", "--model", _files.Model("nan-weights"), "--prompt", "x", "--max-new-tokens", "2", "--verbose");
        Assert.Equal(1, code);
        Assert.Contains("they first appear in layer 2's MLP output, the final norm or the LM head", err);
        Assert.Contains("   at ", err);
    }

    [Fact]
    public void Calibrate_refuses_an_anchor_count_past_the_layers_before_any_prompt_runs()
    {
        int layers = ConfigLoader.Load(TestPaths.InstrumentModel).Layers;
        using var dir = new TempDirectory();
        var (code, output, err) = Run("calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", Path.Combine(TestPaths.RepoRoot, "data", "calibration", "instrument-dev.jsonl"),
            "--write-counts", $"3,{layers + 1}", "--out", dir.File("s.json"));
        Assert.Equal(1, code);
        Assert.Equal($"error: --write-counts {layers + 1}: the model has {layers} layers", err.Trim());
        // Refused before the development set ran: no progress, no table, no schedule.
        Assert.Equal("", output);
        Assert.False(File.Exists(dir.File("s.json")));
    }

    [Fact]
    public void A_huge_max_new_tokens_runs_until_the_context_is_full()
    {
        var (code, _, err) = Run("generate", "--model", _files.Model("valid"), "--prompt", "x", "--max-new-tokens", "2147483647");
        Assert.True(code == 0, err);
        Assert.Matches(@"generated tokens: \d+ \((context full|end of sequence)\)", err);
    }

    public static TheoryData<string, string> BadHeadMaps => new()
    {
        { "shape-not-numeric", "a shape entry is not a non-negative integer" },
        { "int64-beyond-int32", "does not fit an int32" },
        { "header-past-file", "the header length 60000 runs past the end" },
        { "negative-v2-length", "the header length 4294967295 runs past the end" },
        { "unterminated-shape", "malformed header" },
    };

    [Theory]
    [MemberData(nameof(BadHeadMaps))]
    public void A_broken_head_map_is_one_error_line(string npy, string expected)
    {
        using var dir = new TempDirectory();
        OneLine(expected, "schedule", "import", "--model", TestPaths.InstrumentModel, "--head-map", _files.Npy(npy), "--anchors", "0,2", "--out", dir.File("s.json"));
    }

    public static TheoryData<string[], string> BadOptions => new()
    {
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--threads", "0"], "--threads must be a positive integer, not 0" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--threads", "-3"], "--threads must be a positive integer, not -3" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--threads", "many"], "--threads: 'many' is not an integer" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--threads", "0", "--tasks", "passkey", "--haystack", "x", "--out", "/tmp/kascade-eval-bad"], "--threads must be a positive integer, not 0" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--threads", "-1", "--out", "/tmp/s.json"], "--threads must be a positive integer, not -1" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "kascade", "--topk-percent", "NaN"], "--topk-percent must be a percentage in (0, 100], not NaN" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--topk-percent", "NaN", "--out", "/tmp/s.json"], "--topk-percent must be a percentage in (0, 100], not NaN" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--anchors", "many", "--out", "/tmp/s.json"], "--anchors must be a positive integer or auto, not 'many'" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--write-counts", "3,0", "--out", "/tmp/s.json"], "--write-counts: '0' is not a positive integer" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "kascade", "--budget-rule", "exact"], "Argument 'exact' not recognized. Must be one of: 'rounded' 'reference'" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "kascade", "--anchor-refresh", "0"], "--anchor-refresh must be" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "quest", "--anchor-refresh", "4"], "--anchor-refresh applies to the Kascade methods, not 'quest'" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "oracle-topk", "--score-precision", "bf16"], "--score-precision applies to the Kascade methods' anchors, not 'oracle-topk'" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--attention", "kascade", "--score-precision", "fp8"], "Argument 'fp8' not recognized. Must be one of: 'exact' 'bf16'" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--anchors", "auto", "--target-similarity", "1.5", "--out", "/tmp/s.json"], "--target-similarity must be in (0, 1], not 1.5" },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--objective", "max", "--out", "/tmp/s.json"], "Argument 'max' not recognized. Must be one of:" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--temperature", "Infinity"], "--temperature must be a finite number ≥ 0, not Infinity" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--top-p", "NaN"], "--top-p must be a finite number in (0, 1], not NaN" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--stop", ""], "--stop must be a non-empty string" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--prefill-chunk", "0"], "--prefill-chunk must be a positive integer, not 0" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--device", "cuda:x"], "--device must be cpu, cuda or cuda:N, not 'cuda:x'" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--baseline", "quest-page=0"], "--baseline: baseline setting quest-page must be an integer ≥ 1, not '0'" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--lengths", "3000000k", "--tasks", "passkey", "--haystack", "x", "--out", "/tmp/kascade-eval-bad"], "--lengths: '3000000k' is not a context length" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--perplexity-lengths", "0", "--perplexity", "x", "--tasks", "", "--out", "/tmp/kascade-eval-bad"], "--perplexity-lengths: '0' is not a context length" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--out", "/tmp/kascade-eval-bad"], "task 'passkey' needs --haystack DIR" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--attention", "dense,,bigbird", "--tasks", "passkey", "--haystack", "x", "--out", "/tmp/kascade-eval-bad"], "--attention: unknown attention 'bigbird'" },
        { ["eval", "--model", TestPaths.InstrumentModel, "--tasks", "passkey", "--haystack", "x", "--out", "/proc/kascade-cannot-write-here"], "--out /proc/kascade-cannot-write-here: cannot write in /proc" },
        { ["bench", "generate", "--model", TestPaths.InstrumentModel, "--contexts", "3000000k"], "--contexts: '3000000k' is not a context length" },
        { ["bench", "generate", "--model", TestPaths.InstrumentModel, "--contexts", "1k", "--decode-tokens", "2000"], "--contexts 1024 leaves no prompt before 2000 --decode-tokens" },
        { ["bench", "attention", "--heads", "6", "--kv-heads", "4"], "--heads must be a multiple of --kv-heads" },
        { ["bench", "attention", "--kascade", "--topk-percent", "0"], "--topk-percent must be a percent in (0, 100], not 0" },
        { ["bench", "attention", "--attention", "kascade", "--phase", "prefill", "--batch", "4"], "--batch is decode's" },
        { ["bench", "attention", "--attention", "quest"], "--attention quest: bench attention times our dense and Kascade's kernels; a whole decode step of quest is 'kascade bench methods --attention quest'" },
        { ["bench", "attention", "--attention", "bigbird"], "--attention: unknown attention 'bigbird'; bench attention takes dense or kascade" },
        { ["bench", "attention", "--kascade", "--attention", "dense"], "--kascade is --attention kascade; give one of them" },
        { ["bench", "generate", "--random-config", "llama-3.1-8b", "--attention", "dense,bigbird"], "--attention: unknown attention 'bigbird'" },
        { ["bench", "generate", "--model", TestPaths.InstrumentModel, "--attention", "kascade", "--anchors", "3"], "--anchors applies to --random-config: a model's Kascade schedule sets its anchors (--schedule in generate and eval)" },
        { ["bench", "generate", "--random-config", "llama-3.1-8b", "--attention", "kascade", "--anchors", "33"], "--anchors 33: the model has 32 layers" },
        { ["bench", "methods", "--attention", "kascade", "--anchors", "4,33"], "--anchors 33: the model has 32 layers" },
        { ["bench", "methods", "--topk-percent", "10,0"], "--topk-percent: '0' is not a percent in (0, 100]" },
        { ["bench", "methods", "--device", "cpu", "--attention", "quest", "--anchor-refresh", "4"], "--anchors, --anchor-refresh and --score-precision apply to the Kascade methods; --attention names none" },
        { ["bench", "methods", "--device", "cpu", "--attention", "quest", "--score-precision", "bf16"], "--anchors, --anchor-refresh and --score-precision apply to the Kascade methods; --attention names none" },
        { ["bench", "methods", "--device", "cpu", "--score-precision", "exact,fp8"], "--score-precision: 'fp8' is not exact or bf16" },
        { ["bench", "methods", "--device", "cpu", "--config", TestPaths.InstrumentModel, "--contexts", "2", "--attention", "kascade", "--anchor-refresh", "4"], "--contexts 2: a refresh of 4 steps needs at least as many cached positions" },
        { ["bench", "methods", "--device", "cpu", "--attention", "kascade,oracle-topk", "--batch", "4"], "--batch 4: oracle-topk has no batched decode ops; a batch times every other method" },
        { ["bench", "methods", "--config", "no/such/dir"], "'no/such/dir' is neither a preset (llama-3.1-8b) nor a config.json" },
        { ["test-backend", "--device", "cpu", "--only", "top-k,topk"], "--only: 'topk' is not one of ops, exact, top-k, model" },
        { ["test-backend", "--device", "cpu", "--only", "ops,model"], "--only model needs --model DIR: the golden replay and the methods run on a model" },
        { ["frontier", "--model", TestPaths.InstrumentModel, "--evals", "/no/evals", "--speeds", "/no/speeds", "--out", "/tmp/kascade-frontier"], "eval results directory not found: /no/evals" },
        { ["frontier", "--model", TestPaths.InstrumentModel, "--evals", Path.Combine(TestPaths.RepoRoot, "docs", "results", "frontier", "evals"), "--speeds", Path.Combine(TestPaths.RepoRoot, "docs", "results", "frontier", "speed"), "--batch", "8", "--out", "/tmp/kascade-frontier"], "no point is timed at 128k batch 8; the files in " + Path.Combine(TestPaths.RepoRoot, "docs", "results", "frontier", "speed") + " time 32k, 128k, 32k batch 64, 128k batch 64 (--context, --batch)" },
        { ["frontier", "--model", TestPaths.InstrumentModel, "--evals", "/tmp", "--speeds", "/no/speeds", "--out", "/tmp/kascade-frontier"], "speed directory (bench methods --json files) not found: /no/speeds" },
        { ["frontier", "--model", TestPaths.InstrumentModel, "--evals", TestPaths.InstrumentModel, "--speeds", Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack"), "--out", "/tmp/kascade-frontier"], "no kascade eval results (results.json and run.json) in the directories under " + TestPaths.InstrumentModel },
        { ["calibrate", "--model", TestPaths.InstrumentModel, "--dev-set", "d.jsonl", "--out", "/no/such/dir/s.json"], "--out /no/such/dir/s.json: directory /no/such/dir does not exist" },
        { ["devset", "build", "--model", TestPaths.InstrumentModel, "--haystack", "x", "--longbench", "y", "--count", "0", "--out", "/tmp/d.jsonl"], "--count must be a positive integer, not 0" },
        { ["schedule", "import", "--model", TestPaths.InstrumentModel, "--head-map", "m.npy", "--anchors", "0,two", "--out", "/tmp/s.json"], "--anchors: 'two' is not a layer index" },
        { ["generate", "--model", TestPaths.InstrumentModel], "give exactly one of --prompt or --prompt-file" },
        { ["generate", "--prompt", "x"], "Option '--model' is required" },
        { ["generate", "--model", TestPaths.InstrumentModel, "--prompt", "x", "--frobnicate"], "'--frobnicate'" },
        { [], "Required command was not provided" },
        { ["generate", "--model", "org/model-not-in-any-cache", "--prompt", "x"], "model directory not found: org/model-not-in-any-cache" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void Every_option_mistake_is_one_error_line_before_any_work(string[] args, string expected) => OneLine(expected, args);

    [Fact]
    public void An_internal_error_says_so_with_exit_code_2_and_a_trace_only_under_verbose()
    {
        var quiet = new StringWriter();
        Assert.Equal(2, ErrorReport.Write(new InvalidOperationException("the plan is stale"), verbose: false, quiet));
        Assert.StartsWith("error: internal error: InvalidOperationException: the plan is stale; this is a bug in kascade, please report it", quiet.ToString());
        Assert.DoesNotContain("   at ", quiet.ToString());
        var loud = new StringWriter();
        Exception thrown;
        try
        {
            throw new AggregateException(new InvalidOperationException("inner"));
        }
        catch (Exception e)
        {
            thrown = e;
        }
        Assert.Equal(2, ErrorReport.Write(thrown, verbose: true, loud));
        Assert.Contains("internal error: InvalidOperationException: inner", loud.ToString());
        Assert.Contains("   at ", loud.ToString());
        Assert.Equal(1, ErrorReport.Write(new AggregateException(new Kascade.Core.KascadeException("a user's mistake")), verbose: false, new StringWriter()));
        // Parallel workers failing on the same mistake: still the user's, reported once.
        var parallel = new StringWriter();
        Assert.Equal(1, ErrorReport.Write(new AggregateException(new Kascade.Core.KascadeException("bad row"), new Kascade.Core.KascadeException("bad row")), verbose: false, parallel));
        Assert.Equal("error: bad row", parallel.ToString().Trim());
        // A GPU kernel's fault is a bug; a missing GPU or exhausted memory is not.
        Assert.Equal(2, ErrorReport.Write(new Kascade.Cuda.Runtime.CudaException("cuStreamSynchronize failed: an illegal memory access was encountered (700)", isBug: true), verbose: false, new StringWriter()));
        Assert.Equal(1, ErrorReport.Write(new Kascade.Cuda.Runtime.CudaException("cuMemAlloc failed: out of memory (2)"), verbose: false, new StringWriter()));
    }
}
