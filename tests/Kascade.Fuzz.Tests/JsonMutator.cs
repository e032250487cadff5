using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kascade.Fuzz.Tests;

/// <summary>
/// Structural mutations of a JSON document, as a hostile or broken file would carry them: a value of another type,
/// huge, negative or fractional numbers, deleted, renamed and duplicated fields, grown and shrunk lists, then
/// byte-level damage (truncation, invalid UTF-8, flipped bytes). Deterministic for a given <see cref="Random"/>.
/// Large containers (a 50k-token vocabulary) are sampled, so mutations land on the structure as often as on the data.
/// </summary>
public static class JsonMutator
{
    /// <summary>Values that break readers: every JSON type, boundary integers, non-finite spellings, bad text.</summary>
    private static readonly string[] Replacements =
    [
        "null", "true", "false", "0", "-1", "1.5", "-0.0", "1e308", "-1e308", "1e-320", "2147483647", "2147483648", "-2147483649",
        "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1e999",
        "\"\"", "\"x\"", "\"NaN\"", "\"Infinity\"", "\"-1\"", "\"\\ud800\"", "\"\\u0000\"", "\"a\\nb\"", "\"../../x\"",
        "[]", "[null]", "[1, \"a\", [2]]", "{}", "{\"type\": 5}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];

    private static readonly string[] Numbers = ["0", "-1", "-2147483648", "2147483647", "1e9", "4294967297", "9223372036854775807", "1e300", "0.5", "-0.5", "3"];

    /// <summary>
    /// One to three mutations of <paramref name="json"/>; <paramref name="what"/> describes them for a failure report.
    /// A replacement goes into the tree as a placeholder string and its raw text into the output, so texts that no JSON
    /// reader can hold as a string (an unpaired surrogate escape) reach the file as they are.
    /// </summary>
    public static byte[] Mutate(string json, Random rng, out string what)
    {
        var steps = new List<string>();
        var raw = new List<string>();
        var root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true })!;
        int count = 1 + rng.Next(3);
        string? duplicate = null;
        for (int i = 0; i < count; i++)
        {
            int kind = rng.Next(10);
            if (kind < 7)
            {
                root = MutateTree(root, rng, steps, raw);
            }
            else if (kind < 9)
            {
                duplicate ??= PickObjectPath(root, rng);
            }
        }
        string text = duplicate is not null ? WithDuplicateField(root, duplicate, rng, steps) : root.ToJsonString();
        for (int i = 0; i < raw.Count; i++)
        {
            text = text.Replace($"\"{Placeholder(i)}\"", raw[i], StringComparison.Ordinal);
        }
        var bytes = Encoding.UTF8.GetBytes(text);
        if (rng.Next(4) == 0)
        {
            bytes = DamageBytes(bytes, rng, steps);
        }
        what = string.Join("; ", steps);
        return bytes;
    }

    /// <summary>Byte-level damage: truncation, an invalid UTF-8 sequence inside a string, or flipped bytes.</summary>
    public static byte[] DamageBytes(byte[] bytes, Random rng, List<string> steps)
    {
        switch (rng.Next(3))
        {
            case 0:
                int cut = rng.Next(bytes.Length + 1);
                steps.Add($"truncated at byte {cut}");
                return bytes[..cut];
            case 1:
                int quote = Array.IndexOf(bytes, (byte)'"', rng.Next(Math.Max(1, bytes.Length)));
                int at = quote < 0 ? rng.Next(bytes.Length + 1) : quote + 1;
                byte[] bad = rng.Next(3) switch { 0 => [0xFF], 1 => [0xC3], _ => [0xED, 0xA0, 0x80] };   // invalid, cut, surrogate
                steps.Add($"invalid UTF-8 {Convert.ToHexString(bad)} at byte {at}");
                return [.. bytes[..at], .. bad, .. bytes[at..]];
            default:
                var copy = (byte[])bytes.Clone();
                for (int i = 0, n = 1 + rng.Next(4); i < n && copy.Length > 0; i++)
                {
                    int p = rng.Next(copy.Length);
                    copy[p] = (byte)rng.Next(256);
                    steps.Add($"byte {p} set to {copy[p]:X2}");
                }
                return copy;
        }
    }

    private static string Placeholder(int i) => $"@@kascade-fuzz-{i}@@";

    /// <summary>A placeholder node for <paramref name="text"/>, written out as that raw text.</summary>
    private static JsonNode RawValue(string text, List<string> raw)
    {
        raw.Add(text);
        return JsonValue.Create(Placeholder(raw.Count - 1));
    }

    private static JsonNode MutateTree(JsonNode root, Random rng, List<string> steps, List<string> raw)
    {
        var places = new List<(JsonNode Parent, string? Key, int Index, string Path)>();
        Collect(root, "$", places, rng);
        if (places.Count == 0)
        {
            steps.Add("root replaced");
            return RawValue(Replacements[rng.Next(Replacements.Length)], raw);
        }
        var (parent, key, index, path) = places[rng.Next(places.Count)];
        var current = key is not null ? parent[key] : parent[index];
        switch (rng.Next(6))
        {
            case 0 when current is JsonValue v && v.GetValueKind() == JsonValueKind.Number:
                string number = Numbers[rng.Next(Numbers.Length)];
                Set(parent, key, index, RawValue(number, raw));
                steps.Add($"{path} = {number}");
                break;
            case 1 when key is not null:
                ((JsonObject)parent).Remove(key);
                steps.Add($"{path} deleted");
                break;
            case 1:
                ((JsonArray)parent).RemoveAt(index);
                steps.Add($"{path} removed");
                break;
            case 2 when key is not null:
                var obj = (JsonObject)parent;
                var value = obj[key];
                obj.Remove(key);
                string renamed = key + "_x";
                obj[renamed] = value;
                steps.Add($"{path} renamed to {renamed}");
                break;
            case 3 when current is JsonArray list && list.Count > 0:
                list.Add(list[rng.Next(list.Count)]?.DeepClone());
                steps.Add($"{path} grew to {list.Count}");
                break;
            default:
                string replacement = Replacements[rng.Next(Replacements.Length)];
                Set(parent, key, index, RawValue(replacement, raw));
                steps.Add($"{path} = {replacement}");
                break;
        }
        return root;
    }

    private static void Set(JsonNode parent, string? key, int index, JsonNode? value)
    {
        if (key is not null)
        {
            parent[key] = value;
        }
        else
        {
            parent[index] = value;
        }
    }

    /// <summary>Every place a value sits; of a container with more than 32 entries only 8 random ones.</summary>
    private static void Collect(JsonNode? node, string path, List<(JsonNode, string?, int, string)> places, Random rng)
    {
        switch (node)
        {
            case JsonObject obj:
                var props = obj.Select(p => p.Key).ToList();
                foreach (var k in Sample(props, rng))
                {
                    places.Add((obj, k, -1, $"{path}.{k}"));
                    Collect(obj[k], $"{path}.{k}", places, rng);
                }
                break;
            case JsonArray arr:
                foreach (int i in Sample(Enumerable.Range(0, arr.Count).ToList(), rng))
                {
                    places.Add((arr, null, i, $"{path}[{i}]"));
                    Collect(arr[i], $"{path}[{i}]", places, rng);
                }
                break;
        }
    }

    private static IEnumerable<T> Sample<T>(List<T> items, Random rng) =>
        items.Count <= 32 ? items : Enumerable.Range(0, 8).Select(_ => items[rng.Next(items.Count)]).Distinct();

    /// <summary>The path of a random object in the tree (one place in <paramref name="root"/> to write a field twice).</summary>
    private static string? PickObjectPath(JsonNode root, Random rng)
    {
        var places = new List<(JsonNode Parent, string? Key, int Index, string Path)>();
        Collect(root, "$", places, rng);
        var objects = places.Where(p => (p.Key is not null ? p.Parent[p.Key] : p.Parent[p.Index]) is JsonObject { Count: > 0 }).Select(p => p.Path).ToList();
        return root is JsonObject { Count: > 0 } && (objects.Count == 0 || rng.Next(3) == 0) ? "$" : objects.Count > 0 ? objects[rng.Next(objects.Count)] : null;
    }

    /// <summary>The document as text with one field of the object at <paramref name="path"/> written twice, the second time with another value.</summary>
    private static string WithDuplicateField(JsonNode root, string path, Random rng, List<string> steps)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true }))
        {
            Write(writer, root, "$", path, rng, steps);
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void Write(Utf8JsonWriter writer, JsonNode? node, string here, string target, Random rng, List<string> steps)
    {
        switch (node)
        {
            case JsonObject obj:
                writer.WriteStartObject();
                var keys = obj.Select(p => p.Key).ToList();
                int twice = here == target && keys.Count > 0 ? rng.Next(keys.Count) : -1;
                for (int i = 0; i < keys.Count; i++)
                {
                    writer.WritePropertyName(keys[i]);
                    Write(writer, obj[keys[i]], $"{here}.{keys[i]}", target, rng, steps);
                    if (i == twice)
                    {
                        string value = Replacements[rng.Next(Replacements.Length)];
                        writer.WritePropertyName(keys[i]);
                        writer.WriteRawValue(value, skipInputValidation: true);
                        steps.Add($"{here}.{keys[i]} written twice, then = {value}");
                    }
                }
                writer.WriteEndObject();
                break;
            case JsonArray arr:
                writer.WriteStartArray();
                for (int i = 0; i < arr.Count; i++)
                {
                    Write(writer, arr[i], $"{here}[{i}]", target, rng, steps);
                }
                writer.WriteEndArray();
                break;
            case null:
                writer.WriteNullValue();
                break;
            default:
                node.WriteTo(writer);
                break;
        }
    }
}
