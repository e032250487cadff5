using System.Text;
using Kascade.Calibration;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime;
using Kascade.Runtime.Kascade;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;

namespace Kascade.Fuzz.Tests;

/// <summary>
/// kascade-schedule.json of the embedded model: loaded against its config and, when it loads, run — a 40-token prefill
/// and 2 decode steps under Kascade with that schedule.
/// </summary>
public sealed class ScheduleTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly string _seed = File.ReadAllText(Path.Combine(TestPaths.InstrumentModel, "kascade-schedule.json"));
    private readonly CpuBackend _backend = new(threads: 1);
    private readonly ModelDirectory _model;

    public ScheduleTarget() => _model = ModelDirectory.Open(TestPaths.InstrumentModel, _backend);

    public string Name => "schedule JSON";

    public byte[] Original() => Encoding.UTF8.GetBytes(_seed);

    public byte[] Mutate(Random rng, out string what) => JsonMutator.Mutate(_seed, rng, out what);

    public void Load(byte[] input)
    {
        File.WriteAllBytes(_dir.File("s.json"), input);
        var schedule = ScheduleFile.Load(_dir.File("s.json"), _model.Config);
        var policy = new AttentionPolicy(AttentionMethod.Kascade, schedule, schedule.TopKPercent);
        using var session = _model.Model.CreateSession(48, policy: policy);
        session.Prefill([.. Enumerable.Range(100, 40)], new SamplingOptions());
        session.Decode(new SamplingOptions());
        session.Decode(new SamplingOptions());
    }

    public void Dispose()
    {
        _model.Dispose();
        _backend.Dispose();
        _dir.Dispose();
    }
}

/// <summary>
/// The official repository's head map (.npy int32 [layers, kvHeads]), imported for the embedded model. The header's
/// Python dict is mutated structurally (values of other types, huge and negative dimensions, deleted, renamed and
/// repeated keys), and the fixed fields and data at the byte level.
/// </summary>
public sealed class NpyTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly ModelConfig _config = Runtime.Loading.ConfigLoader.Load(TestPaths.InstrumentModel);
    private readonly string[] _values;

    public NpyTarget()
    {
        // The shape the embedded model needs, and its near misses.
        int l = _config.Layers, h = _config.KvHeads;
        _values =
        [
            "'<i4'", "'<i8'", "'<f4'", "'|b1'", "'>i4'", "True", "False", "None", $"({l}, {h})", $"({h}, {l})", $"({l * h},)", "()", $"({l}, {h}, 1)", $"(x, {h})",
            $"(-1, {h})", $"(4294967296, {h})", "(99999999999999999999,)", $"({l} {h})", $"({l},", "'", "\"<i4\"", "1e9", "{}", $"[{l}, {h}]",
        ];
    }

    public string Name => ".npy head map";

    private string Shape => $"({_config.Layers}, {_config.KvHeads})";

    /// <summary>The identity map [0, 1, …] on every layer.</summary>
    private List<int> IdentityMap() => [.. Enumerable.Range(0, _config.Layers * _config.KvHeads).Select(i => i % _config.KvHeads)];

    public byte[] Original() => NpyWriter.Bytes(NpyWriter.Padded($"{{'descr': '<i4', 'fortran_order': False, 'shape': {Shape}, }}"), NpyWriter.Int32s([.. IdentityMap()]));

    public byte[] Mutate(Random rng, out string what)
    {
        var fields = new List<(string Key, string Value)> { ("descr", "'<i4'"), ("fortran_order", "False"), ("shape", Shape) };
        var steps = new List<string>();
        var data = IdentityMap();
        int major = 1, kind = rng.Next(10);
        long? declared = null;
        switch (kind)
        {
            case < 4:
                MutateHeader(fields, rng, steps);
                break;
            case 4:
                major = rng.Next(5);
                steps.Add($"version {major}");
                break;
            case 5:
                declared = new long[] { 0, 1, 9, 65535, uint.MaxValue, int.MaxValue + 1L }[rng.Next(6)];
                steps.Add($"header length field {declared}");
                break;
            case 6:
                int at = rng.Next(data.Count);
                data[at] = new[] { -1, 2, 3, int.MinValue, int.MaxValue }[rng.Next(5)];
                steps.Add($"value {at} = {data[at]}");
                break;
            case 7:
                data = data.Take(rng.Next(data.Count)).ToList();
                steps.Add($"data cut to {data.Count} values");
                break;
            case 8:
                steps.Add("unchanged");
                break;
        }
        string header = NpyWriter.Padded("{" + string.Join(", ", fields.Select(p => $"'{p.Key}': {p.Value}")) + ", }", major);
        var result = NpyWriter.Bytes(header, NpyWriter.Int32s([.. data]), major, declared);
        if (kind == 9)
        {
            result = JsonMutator.DamageBytes(result, rng, steps);
        }
        what = string.Join("; ", steps);
        return result;
    }

    /// <summary>One or two operations on the header dict: reorder, delete, repeat, rename or re-value a key.</summary>
    private void MutateHeader(List<(string Key, string Value)> fields, Random rng, List<string> steps)
    {
        for (int i = 0, n = 1 + rng.Next(2); i < n && fields.Count > 0; i++)
        {
            int f = rng.Next(fields.Count);
            switch (rng.Next(5))
            {
                case 0:
                    steps.Add($"{fields[f].Key} deleted");
                    fields.RemoveAt(f);
                    break;
                case 1:
                    fields.Add(fields[f] with { Value = _values[rng.Next(_values.Length)] });
                    steps.Add($"{fields[f].Key} repeated as {fields[^1].Value}");
                    break;
                case 2:
                    steps.Add($"{fields[f].Key} renamed");
                    fields[f] = fields[f] with { Key = fields[f].Key + "x" };
                    break;
                case 3:
                    var field = fields[f];
                    fields.RemoveAt(f);
                    fields.Insert(rng.Next(fields.Count + 1), field);
                    steps.Add($"{field.Key} moved");
                    break;
                default:
                    fields[f] = fields[f] with { Value = _values[rng.Next(_values.Length)] };
                    steps.Add($"{fields[f].Key} = {fields[f].Value}");
                    break;
            }
        }
    }

    public void Load(byte[] input)
    {
        File.WriteAllBytes(_dir.File("map.npy"), input);
        // Anchors: layer 0, then every third layer (valid for any depth).
        ScheduleFile.ImportOfficial(_dir.File("map.npy"), [.. Enumerable.Range(0, _config.Layers).Where(l => l % 3 == 0)], _config, "fuzz");
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// A JSONL file of eval tasks (LongBench lines of a QA and a classification task, and a line with its own metric), a line
/// mutated structurally or lines deleted, repeated or joined; what loads is turned into prompts at 1k tokens and scored.
/// </summary>
public sealed class EvalJsonlTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly string[] _seed;
    private readonly TextTokenizer _tokenizer = TextTokenizer.Load(TestPaths.InstrumentModel);

    public EvalJsonlTarget()
    {
        string data = Path.Combine(TestPaths.RepoRoot, "tests", "data", "longbench-mini");
        _seed =
        [
            JsonLines.Shortened(File.ReadLines(Path.Combine(data, "hotpotqa.jsonl")).First(), 3000, "hotpotqa-0"),
            JsonLines.Shortened(File.ReadLines(Path.Combine(data, "trec.jsonl")).First(), 3000, "trec-0"),
            "{\"id\": 7, \"prompt\": \"The pass key is 71432. What is the pass key?\", \"answers\": [\"71432\"], \"metric\": \"contains_all\", \"max_new_tokens\": 8}",
        ];
    }

    public string Name => "eval JSONL";

    public byte[] Original() => Encoding.UTF8.GetBytes(string.Join('\n', _seed) + "\n");

    public byte[] Mutate(Random rng, out string what)
    {
        var lines = _seed.ToList();
        int at = rng.Next(lines.Count);
        switch (rng.Next(8))
        {
            case 0:
                lines.RemoveAt(at);
                what = $"line {at} deleted";
                break;
            case 1:
                lines.Insert(at, lines[at]);
                what = $"line {at} repeated";
                break;
            case 2:
                lines[at] += lines[(at + 1) % lines.Count];
                what = $"line {at} joined with the next";
                break;
            default:
                lines[at] = Encoding.UTF8.GetString(JsonMutator.Mutate(lines[at], rng, out what));
                what = $"line {at}: {what}";
                break;
        }
        return Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n");
    }

    public void Load(byte[] input)
    {
        // The file name is a LongBench task's, so lines without a "task" or "metric" take hotpotqa's metric.
        string path = _dir.File("hotpotqa.jsonl");
        File.WriteAllBytes(path, input);
        var task = JsonlTask.Load(path);
        for (int i = 0; i < task.Available; i++)
        {
            task.Create(_tokenizer, 1024, i, seed: 1).Score("The answer is 71432, in Paris.");
        }
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>A calibration development set (JSONL of {id, prompt}).</summary>
public sealed class DevSetTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly string _seed = string.Join('\n', File.ReadLines(Path.Combine(TestPaths.RepoRoot, "data", "calibration", "instrument-dev.jsonl")).Take(2).Select(l => JsonLines.Shortened(l, 400)));

    public string Name => "dev set JSONL";

    public byte[] Original() => Encoding.UTF8.GetBytes(_seed);

    public byte[] Mutate(Random rng, out string what)
    {
        var lines = _seed.Split('\n');
        int at = rng.Next(lines.Length);
        lines[at] = Encoding.UTF8.GetString(JsonMutator.Mutate(lines[at], rng, out what));
        what = $"line {at}: {what}";
        return Encoding.UTF8.GetBytes(string.Join('\n', lines));
    }

    public void Load(byte[] input)
    {
        File.WriteAllBytes(_dir.File("dev.jsonl"), input);
        DevSet.Read(_dir.File("dev.jsonl"));
    }

    public void Dispose() => _dir.Dispose();
}
