using System.Text.Json;
using Kascade.Core;

namespace Kascade.Evaluation;

/// <summary>The outcome of one prompt under one attention method.</summary>
public sealed record SampleResult(
    string Task, int Length, string Method, int Index, string Id, double? Depth,
    int PromptTokens, int GeneratedTokens, double Score, string Output, IReadOnlyList<string> Answers)
{
    public (string, int, string, int) Key => (Task, Length, Method, Index);
}

/// <summary>The summed negative log-likelihood of the scored tokens of one perplexity window under one method.</summary>
public sealed record PerplexityResult(string Method, int Length, int Window, int Tokens, double NegativeLogLikelihood)
{
    public (string, int, int) Key => (Method, Length, Window);
}

/// <summary>
/// An evaluation's output directory as the record of its progress: <c>run.json</c> names what the results depend
/// on, and every finished sample is appended to <c>samples.jsonl</c> (or <c>perplexity.jsonl</c>) and flushed, so an
/// interrupted run resumes where it stopped. A line cut short by the interruption is dropped on reopening.
/// </summary>
public sealed class ResultStore
{
    public const string RunFile = "run.json", SamplesFile = "samples.jsonl", PerplexityFile = "perplexity.jsonl";

    private readonly string _directory;
    private readonly Dictionary<(string, int, string, int), SampleResult> _samples = [];
    private readonly Dictionary<(string, int, int), PerplexityResult> _perplexity = [];

    private ResultStore(string directory) => _directory = directory;

    public string Directory => _directory;

    public IReadOnlyCollection<SampleResult> Samples => _samples.Values;

    public IReadOnlyCollection<PerplexityResult> Perplexity => _perplexity.Values;

    /// <summary>
    /// Opens (or starts) <paramref name="directory"/> for a run described by <paramref name="identity"/>. A key both
    /// runs name must have the same value, or the directory is refused rather than mixed; a key only one of them names
    /// (an added method, perplexity measured only now) is merged in, so separate invocations can fill one run.
    /// </summary>
    public static ResultStore Open(string directory, IReadOnlyDictionary<string, string> identity)
    {
        System.IO.Directory.CreateDirectory(directory);
        string runPath = Path.Combine(directory, RunFile);
        var stored = File.Exists(runPath) ? ReadIdentity(runPath) : new Dictionary<string, string>(StringComparer.Ordinal);
        var differences = identity.Where(p => stored.TryGetValue(p.Key, out var old) && old != p.Value).OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => $"{p.Key}: '{stored[p.Key]}' there, '{p.Value}' now").ToList();
        if (differences.Count > 0)
        {
            throw new KascadeException($"{directory} holds results of a different run ({string.Join("; ", differences)}); use another --out directory");
        }
        foreach (var (key, value) in identity)
        {
            stored[key] = value;
        }
        WriteIdentity(runPath, stored);
        var store = new ResultStore(directory);
        foreach (var element in ReadLines(Path.Combine(directory, SamplesFile)))
        {
            var r = new SampleResult(
                element.GetProperty("task").GetString()!, element.GetProperty("length").GetInt32(), element.GetProperty("method").GetString()!,
                element.GetProperty("index").GetInt32(), element.GetProperty("id").GetString()!,
                element.GetProperty("depth").ValueKind == JsonValueKind.Number ? element.GetProperty("depth").GetDouble() : null,
                element.GetProperty("prompt_tokens").GetInt32(), element.GetProperty("generated_tokens").GetInt32(), element.GetProperty("score").GetDouble(),
                element.GetProperty("output").GetString()!, [.. element.GetProperty("answers").EnumerateArray().Select(a => a.GetString()!)]);
            store._samples[r.Key] = r;
        }
        foreach (var element in ReadLines(Path.Combine(directory, PerplexityFile)))
        {
            var r = new PerplexityResult(
                element.GetProperty("method").GetString()!, element.GetProperty("length").GetInt32(), element.GetProperty("window").GetInt32(),
                element.GetProperty("tokens").GetInt32(), element.GetProperty("nll").GetDouble());
            store._perplexity[r.Key] = r;
        }
        return store;
    }

    public bool Has((string Task, int Length, string Method, int Index) key) => _samples.ContainsKey(key);

    public bool Has((string Method, int Length, int Window) key) => _perplexity.ContainsKey(key);

    public void Add(SampleResult r)
    {
        Append(SamplesFile, w =>
        {
            w.WriteString("task", r.Task);
            w.WriteNumber("length", r.Length);
            w.WriteString("method", r.Method);
            w.WriteNumber("index", r.Index);
            w.WriteString("id", r.Id);
            if (r.Depth is { } depth)
            {
                w.WriteNumber("depth", depth);
            }
            else
            {
                w.WriteNull("depth");
            }
            w.WriteNumber("prompt_tokens", r.PromptTokens);
            w.WriteNumber("generated_tokens", r.GeneratedTokens);
            w.WriteNumber("score", r.Score);
            w.WriteString("output", r.Output);
            w.WriteStartArray("answers");
            foreach (var a in r.Answers)
            {
                w.WriteStringValue(a);
            }
            w.WriteEndArray();
        });
        _samples[r.Key] = r;
    }

    public void Add(PerplexityResult r)
    {
        Append(PerplexityFile, w =>
        {
            w.WriteString("method", r.Method);
            w.WriteNumber("length", r.Length);
            w.WriteNumber("window", r.Window);
            w.WriteNumber("tokens", r.Tokens);
            w.WriteNumber("nll", r.NegativeLogLikelihood);
        });
        _perplexity[r.Key] = r;
    }

    private void Append(string file, Action<Utf8JsonWriter> fields)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            fields(w);
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        using var stream = new FileStream(Path.Combine(_directory, file), FileMode.Append, FileAccess.Write);
        buffer.WriteTo(stream);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>The JSON objects of a results file; a last line cut short by an interruption is removed from the file.</summary>
    private static List<JsonElement> ReadLines(string path)
    {
        var result = new List<JsonElement>();
        if (!File.Exists(path))
        {
            return result;
        }
        var lines = File.ReadAllLines(path);
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Length == 0)
            {
                continue;
            }
            try
            {
                result.Add(JsonDocument.Parse(lines[i]).RootElement.Clone());
            }
            catch (JsonException) when (i == lines.Length - 1)
            {
                File.WriteAllLines(path, lines[..i]);
            }
            catch (JsonException e)
            {
                throw new KascadeException($"{path}:{i + 1}: not a result line ({e.Message}); the file was edited or damaged");
            }
        }
        return result;
    }

    private static Dictionary<string, string> ReadIdentity(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.GetProperty("identity").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "", StringComparer.Ordinal);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new KascadeException($"{path} is not an evaluation run file ({e.Message})");
        }
    }

    private static void WriteIdentity(string path, IReadOnlyDictionary<string, string> identity)
    {
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteStartObject("identity");
        foreach (var (key, value) in identity.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            w.WriteString(key, value);
        }
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
