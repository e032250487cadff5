using System.Text.Json;
using Kascade.Core;

namespace Kascade.Calibration;

/// <summary>One development-set prompt.</summary>
public sealed record DevSetExample(string Id, string Prompt);

/// <summary>A development set: JSONL, one <c>{"id": ..., "prompt": ...}</c> object a line.</summary>
public static class DevSet
{
    public static IReadOnlyList<DevSetExample> Read(string path, int? limit = null)
    {
        if (!File.Exists(path))
        {
            throw new KascadeException($"development set not found: {path}");
        }
        var examples = new List<DevSetExample>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                string prompt = root.GetProperty("prompt").GetString() ?? "";
                if (prompt.Length == 0)
                {
                    throw new KascadeException($"{Path.GetFileName(path)}, line {lineNumber}: empty prompt");
                }
                string id = root.TryGetProperty("id", out var i) ? i.ToString() : lineNumber.ToString(System.Globalization.CultureInfo.InvariantCulture);
                examples.Add(new DevSetExample(id, prompt));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new KascadeException($"{Path.GetFileName(path)}, line {lineNumber}: expected a JSON object with a string \"prompt\" ({e.Message})");
            }
            if (examples.Count == limit)
            {
                break;
            }
        }
        return examples;
    }

    public static void Write(string path, IEnumerable<DevSetExample> examples)
    {
        using var writer = new StreamWriter(path);
        foreach (var e in examples)
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            {
                json.WriteStartObject();
                json.WriteString("id", e.Id);
                json.WriteString("prompt", e.Prompt);
                json.WriteEndObject();
            }
            writer.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }
    }
}
