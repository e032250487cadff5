using System.Globalization;
using System.Text.Json;

namespace Kascade.Core;

/// <summary>
/// A JSON object read from a named file with every value's type checked. A value of the wrong type, out of range or
/// not finite becomes one <see cref="KascadeException"/> naming the file, the field's path (<c>rope_scaling.factor</c>,
/// <c>eos_token_id[1]</c>) and what was expected — never a silently used default and never an exception of
/// <see cref="JsonElement"/>'s. Absent fields and JSON <c>null</c> are the same to the <c>Optional…</c> readers, as
/// they are to Python's <c>dict.get</c>, which is how Hugging Face reads these files.
/// </summary>
public readonly struct JsonFields
{
    private readonly JsonElement _element;

    /// <param name="element">A JSON object.</param>
    /// <param name="file">The file's name, first in every message (e.g. <c>config.json</c>).</param>
    /// <param name="path">Where this object sits in the file (<c>""</c> for the root).</param>
    public JsonFields(JsonElement element, string file, string path = "")
    {
        File = file;
        Path = path;
        _element = element.ValueKind == JsonValueKind.Object
            ? element
            : throw new KascadeException(path.Length == 0 ? $"{file}: expected a JSON object, not {Describe(element)}" : $"{file}: '{path}' must be an object, not {Describe(element)}");
    }

    public string File { get; }

    public string Path { get; }

    /// <summary>Parses <paramref name="utf8"/> (invalid UTF-8 and invalid JSON are one message each) and returns its root object.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, string file, JsonDocumentOptions options = default)
    {
        if (!System.Text.Unicode.Utf8.IsValid(utf8.Span))
        {
            throw new KascadeException($"{file} is not valid UTF-8 text");
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8, options);
        }
        catch (JsonException e)
        {
            throw new KascadeException($"{file} is not valid JSON ({e.Message})");
        }
        if (UnreadableString(doc.RootElement) is { } bad)
        {
            doc.Dispose();
            throw new KascadeException($"{file} holds {bad}");
        }
        return doc;
    }

    /// <summary>
    /// The first key or string in <paramref name="element"/> that is not text — a <c>\uD800</c>-style escape of an
    /// unpaired surrogate, which JSON's grammar allows but no reader can turn into a string — described for a message;
    /// null when every string reads.
    /// </summary>
    public static string? UnreadableString(JsonElement element, string path = "$")
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return Readable(() => element.GetString()) ? null : $"a string at {path} with an unpaired surrogate escape";
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in element.EnumerateArray())
                {
                    if (UnreadableString(item, $"{path}[{i++}]") is { } bad)
                    {
                        return bad;
                    }
                }
                return null;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (!Readable(() => property.Name))
                    {
                        return $"a key in {path} with an unpaired surrogate escape";
                    }
                    if (UnreadableString(property.Value, $"{path}.{property.Name}") is { } bad)
                    {
                        return bad;
                    }
                }
                return null;
            default:
                return null;
        }
    }

    private static bool Readable(Func<string?> read)
    {
        try
        {
            read();
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>The root object of <paramref name="path"/> (followed through symbolic links); the caller disposes the document.</summary>
    public static (JsonDocument Document, JsonFields Root) Load(string path, string? file = null)
    {
        file ??= System.IO.Path.GetFileName(path);
        var doc = Parse(System.IO.File.ReadAllBytes(path), file);
        try
        {
            return (doc, new JsonFields(doc.RootElement, file));
        }
        catch
        {
            doc.Dispose();
            throw;
        }
    }

    /// <summary>The path of field <paramref name="name"/> for messages.</summary>
    public string Field(string name) => Path.Length == 0 ? name : $"{Path}.{name}";

    /// <summary>A message about field <paramref name="name"/>: <c>file: 'path' problem</c>.</summary>
    public KascadeException Error(string name, string problem) => new($"{File}: '{Field(name)}' {problem}");

    /// <summary>True when the field is present and not <c>null</c>.</summary>
    public bool Has(string name) => Optional(name) is not null;

    /// <summary>The field's value, or null when it is absent or <c>null</c>.</summary>
    public JsonElement? Optional(string name) =>
        _element.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public JsonElement Required(string name) => Optional(name) ?? throw Error(name, "is missing");

    public IEnumerable<JsonProperty> Properties => _element.EnumerateObject();

    public string? OptionalString(string name) => Optional(name) is { } v ? AsString(v, Where(name)) : null;

    public string String(string name) => AsString(Required(name), Where(name));

    public bool? OptionalBool(string name) => Optional(name) is { } v ? AsBool(v, Where(name)) : null;

    public int? OptionalInt(string name, int min = int.MinValue, int max = int.MaxValue) =>
        Optional(name) is { } v ? AsInt(v, Where(name), min, max) : null;

    public int Int(string name, int min = int.MinValue, int max = int.MaxValue) => AsInt(Required(name), Where(name), min, max);

    /// <summary>A finite number, greater than <paramref name="above"/> when given.</summary>
    public double? OptionalDouble(string name, double? above = null) =>
        Optional(name) is { } v ? AsDouble(v, Where(name), above) : null;

    public double Double(string name, double? above = null) => AsDouble(Required(name), Where(name), above);

    public JsonFields? OptionalObject(string name) => Optional(name) is { } v ? new JsonFields(v, File, Field(name)) : null;

    public JsonFields Object(string name) => new(Required(name), File, Field(name));

    public IReadOnlyList<JsonElement> OptionalArray(string name) => Optional(name) is { } v ? AsArray(v, Where(name)) : [];

    public IReadOnlyList<JsonElement> Array(string name) => AsArray(Required(name), Where(name));

    /// <summary>"file: 'path'" for an element inside field <paramref name="name"/>; index it with <see cref="Index"/>.</summary>
    public string Where(string name) => $"{File}: '{Field(name)}'";

    /// <summary>The place of element <paramref name="i"/> of an array at <paramref name="where"/>.</summary>
    public static string Index(string where, int i) => where.EndsWith('\'') ? $"{where[..^1]}[{i}]'" : $"{where}[{i}]";

    public static string AsString(JsonElement v, string where)
    {
        if (v.ValueKind != JsonValueKind.String)
        {
            throw new KascadeException($"{where} must be a string, not {Describe(v)}");
        }
        try
        {
            return v.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw new KascadeException($"{where} is not text (an unpaired surrogate escape)");
        }
    }

    public static bool AsBool(JsonElement v, string where) =>
        v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new KascadeException($"{where} must be true or false, not {Describe(v)}");

    public static int AsInt(JsonElement v, string where, int min = int.MinValue, int max = int.MaxValue) =>
        (int)AsLong(v, where, min, max);

    /// <summary>An integer in [min, max]; a number written with a fraction part of zero (<c>8192.0</c>) counts as one.</summary>
    public static long AsLong(JsonElement v, string where, long min = long.MinValue, long max = long.MaxValue)
    {
        string range = min == long.MinValue && max == long.MaxValue ? "an integer"
            : max == long.MaxValue || max == int.MaxValue ? string.Create(CultureInfo.InvariantCulture, $"an integer ≥ {min}")
            : string.Create(CultureInfo.InvariantCulture, $"an integer in [{min}, {max}]");
        if (v.ValueKind != JsonValueKind.Number)
        {
            throw new KascadeException($"{where} must be {range}, not {Describe(v)}");
        }
        if (!v.TryGetInt64(out long l) && v.TryGetDouble(out double d) && double.IsFinite(d) && d == Math.Floor(d) && Math.Abs(d) < 9.2e18)
        {
            l = (long)d;
        }
        else if (!v.TryGetInt64(out l))
        {
            throw new KascadeException($"{where} must be {range}, not {Describe(v)}");
        }
        if (l >= min && l <= max)
        {
            return l;
        }
        throw new KascadeException($"{where} must be {range}, not {Describe(v)}");
    }

    public static double AsDouble(JsonElement v, string where, double? above = null)
    {
        string what = above is { } a ? string.Create(CultureInfo.InvariantCulture, $"a finite number > {a}") : "a finite number";
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) && (above is null || d > above))
        {
            return d;
        }
        throw new KascadeException($"{where} must be {what}, not {Describe(v)}");
    }

    public static IReadOnlyList<JsonElement> AsArray(JsonElement v, string where) =>
        v.ValueKind == JsonValueKind.Array ? [.. v.EnumerateArray()] : throw new KascadeException($"{where} must be a list, not {Describe(v)}");

    /// <summary>The value as a message shows it: its JSON type and, for scalars, its text (cut to 40 characters).</summary>
    public static string Describe(JsonElement v)
    {
        string text = v.GetRawText();
        string shown = text.Length > 40 ? text[..40] + "…" : text;
        return v.ValueKind switch
        {
            JsonValueKind.String => $"a string ({shown})",
            JsonValueKind.Number => shown,
            JsonValueKind.True or JsonValueKind.False => shown,
            JsonValueKind.Null => "null",
            JsonValueKind.Array => $"a list of {v.GetArrayLength()}",
            JsonValueKind.Object => "an object",
            _ => shown,
        };
    }
}
