using System.Text.Json;
using System.Text.RegularExpressions;
using Kascade.Core;
using Microsoft.ML.Tokenizers;

namespace Kascade.Runtime.Tokenization;

/// <summary>
/// A model's tokenizer: HF <c>tokenizer.json</c> byte-level BPE, run by <c>Microsoft.ML.Tokenizers</c>'
/// <see cref="BpeTokenizer"/> (this type adapts the file format and adds the special tokens the file's
/// post-processor asks for), or SentencePiece BPE <c>tokenizer.model</c> (<see cref="SentencePieceBpe"/>).
/// </summary>
public sealed class TextTokenizer
{
    private readonly Func<string, IReadOnlyList<int>> _encode;
    private readonly Func<IEnumerable<int>, string> _decode;
    private readonly IReadOnlyList<int> _prefix;
    private readonly IReadOnlyList<int> _suffix;

    private TextTokenizer(Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode, IReadOnlyList<int> prefix, IReadOnlyList<int> suffix, IReadOnlyDictionary<string, int> specialTokens)
    {
        _encode = encode;
        _decode = decode;
        _prefix = prefix;
        _suffix = suffix;
        SpecialTokens = specialTokens;
    }

    /// <summary>Added and special tokens by their text.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>Loads <c>tokenizer.json</c> when it holds a byte-level BPE, else <c>tokenizer.model</c> (SentencePiece).</summary>
    public static TextTokenizer Load(string directory)
    {
        string json = Path.Combine(directory, "tokenizer.json");
        string model = Path.Combine(directory, "tokenizer.model");
        string? jsonProblem = null;
        if (File.Exists(json))
        {
            jsonProblem = TokenizerJson.Unsupported(json);
            if (jsonProblem is null)
            {
                return FromTokenizerJson(json);
            }
        }
        if (File.Exists(model))
        {
            return FromSentencePiece(model);
        }
        throw new KascadeException(jsonProblem ?? $"no tokenizer in {directory}: expected tokenizer.json or tokenizer.model");
    }

    public static TextTokenizer FromTokenizerJson(string path)
    {
        var parsed = TokenizerJson.Parse(path);
        var bpe = parsed.Tokenizer;
        return new TextTokenizer(text => bpe.EncodeToIds(text), bpe.Decode, parsed.Prefix, parsed.Suffix, parsed.SpecialTokens);
    }

    /// <summary>SentencePiece (Llama 2, Mistral): BOS added like HF's LlamaTokenizer.</summary>
    public static TextTokenizer FromSentencePiece(string path)
    {
        var sp = SentencePieceBpe.Load(path);
        return new TextTokenizer(sp.Encode, sp.Decode, sp.BosId >= 0 ? [sp.BosId] : [], [], sp.ControlTokens);
    }

    /// <summary>Token ids of <paramref name="text"/>, with the tokenizer's own BOS/EOS template when <paramref name="addSpecialTokens"/>.</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        var ids = _encode(text);
        return addSpecialTokens ? [.. _prefix, .. ids, .. _suffix] : [.. ids];
    }

    public string Decode(IEnumerable<int> ids) => _decode(ids);

    /// <summary>
    /// A decoder that yields text as tokens arrive, holding back incomplete UTF-8 characters. The last tokens of
    /// <paramref name="context"/> (the prompt) seed it, so the first new token decodes with its leading space.
    /// </summary>
    public StreamingDecoder CreateStreamingDecoder(ReadOnlySpan<int> context = default) => new(this, context);
}

/// <summary>
/// Incremental detokenisation (the scheme of HF's DecodeStream): decode a short window of ids before and
/// after the newest token and emit the difference, waiting while the text ends in U+FFFD, which is what a
/// byte-level or byte-fallback token that splits a multi-byte UTF-8 character decodes to.
/// </summary>
public sealed class StreamingDecoder
{
    /// <summary>Context tokens kept: enough for a SentencePiece word boundary or a split UTF-8 character.</summary>
    private const int ContextTokens = 4;

    private readonly TextTokenizer _tokenizer;
    private readonly List<int> _ids;
    private int _prefixIndex;
    private int _readIndex;

    internal StreamingDecoder(TextTokenizer tokenizer, ReadOnlySpan<int> context)
    {
        _tokenizer = tokenizer;
        _ids = [.. context[Math.Max(0, context.Length - ContextTokens)..]];
        _readIndex = _ids.Count;
    }

    /// <summary>Appends <paramref name="id"/>; returns the text it completes (possibly empty).</summary>
    public string Add(int id)
    {
        _ids.Add(id);
        string prefixText = _tokenizer.Decode(_ids.Skip(_prefixIndex).Take(_readIndex - _prefixIndex));
        string newText = _tokenizer.Decode(_ids.Skip(_prefixIndex));
        if (newText.Length > prefixText.Length && !newText.EndsWith('\uFFFD'))
        {
            _prefixIndex = _readIndex;
            _readIndex = _ids.Count;
            return newText[prefixText.Length..];
        }
        return "";
    }
}

/// <summary>Reads the parts of HF <c>tokenizer.json</c> a byte-level BPE needs and builds a <see cref="BpeTokenizer"/>.</summary>
internal static class TokenizerJson
{
    internal sealed record Parsed(BpeTokenizer Tokenizer, int[] Prefix, int[] Suffix, IReadOnlyDictionary<string, int> SpecialTokens);

    /// <summary>Why this tokenizer.json cannot be loaded as byte-level BPE; null when it can.</summary>
    internal static string? Unsupported(string path)
    {
        using var doc = Open(path);
        var root = doc.RootElement;
        string modelType = root.TryGetProperty("model", out var m) && m.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
        if (modelType != "BPE")
        {
            return $"tokenizer.json: model type '{modelType}' is not supported (byte-level BPE, or SentencePiece via tokenizer.model)";
        }
        if (!IsByteLevel(root))
        {
            return "tokenizer.json: only byte-level BPE is supported; for SentencePiece-style BPE put tokenizer.model beside it";
        }
        return null;
    }

    internal static Parsed Parse(string path)
    {
        using var doc = Open(path);
        var root = doc.RootElement;
        if (Unsupported(path) is { } problem)
        {
            throw new KascadeException(problem);
        }
        try
        {
            var model = root.GetProperty("model");
            var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32())).ToList();
            var merges = model.GetProperty("merges").EnumerateArray()
                .Select(e => e.ValueKind == JsonValueKind.Array ? $"{e[0].GetString()} {e[1].GetString()}" : e.GetString()!)
                .ToList();
            var specials = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var a in added.EnumerateArray())
                {
                    specials[a.GetProperty("content").GetString()!] = a.GetProperty("id").GetInt32();
                }
            }
            var options = new BpeOptions(vocab)
            {
                Merges = merges,
                SpecialTokens = specials,
                ByteLevel = true,
                PreTokenizer = new SplitPreTokenizer(Stages(root.GetProperty("pre_tokenizer")), specials.Keys),
                Normalizer = ParseNormalizer(root),
            };
            var (prefix, suffix) = Template(root, specials);
            return new Parsed(BpeTokenizer.Create(options), prefix, suffix, specials);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new KascadeException($"tokenizer.json is malformed ({e.Message})");
        }
    }

    private static JsonDocument Open(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new KascadeException($"tokenizer.json is not valid JSON ({e.Message})");
        }
    }

    private static bool IsByteLevel(JsonElement root) =>
        root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object && d.TryGetProperty("type", out var t) && t.GetString() == "ByteLevel";

    private static List<Func<string, int, int, IEnumerable<(int, int)>>> Stages(JsonElement pre)
    {
        var stages = new List<Func<string, int, int, IEnumerable<(int, int)>>>();
        if (pre.ValueKind == JsonValueKind.Null)
        {
            return stages;
        }
        string type = pre.GetProperty("type").GetString()!;
        switch (type)
        {
            case "Sequence":
                foreach (var p in pre.GetProperty("pretokenizers").EnumerateArray())
                {
                    stages.AddRange(Stages(p));
                }
                break;
            case "Split":
                string behavior = pre.TryGetProperty("behavior", out var b) ? b.GetString()! : "Isolated";
                bool invert = pre.TryGetProperty("invert", out var inv) && inv.GetBoolean();
                if (behavior != "Isolated" || invert)
                {
                    throw new KascadeException($"tokenizer.json: Split with behavior '{behavior}'{(invert ? " inverted" : "")} is not supported (Isolated only)");
                }
                var pattern = pre.GetProperty("pattern");
                string regex = pattern.TryGetProperty("Regex", out var r) ? r.GetString()! : Regex.Escape(pattern.GetProperty("String").GetString()!);
                stages.Add(SplitPreTokenizer.RegexStage(new Regex(regex, RegexOptions.Compiled | RegexOptions.CultureInvariant)));
                break;
            case "Digits":
                stages.Add(SplitPreTokenizer.DigitsStage(pre.TryGetProperty("individual_digits", out var ind) && ind.GetBoolean()));
                break;
            case "ByteLevel":
                if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.GetBoolean())
                {
                    throw new KascadeException("tokenizer.json: ByteLevel with add_prefix_space = true is not supported");
                }
                if (!pre.TryGetProperty("use_regex", out var ur) || ur.GetBoolean())
                {
                    stages.Add(SplitPreTokenizer.RegexStage(new Regex(SplitPreTokenizer.Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant)));
                }
                break;
            default:
                throw new KascadeException($"tokenizer.json: pre-tokenizer '{type}' is not supported (Sequence, Split, Digits, ByteLevel)");
        }
        return stages;
    }

    private static Normalizer? ParseNormalizer(JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        string type = n.GetProperty("type").GetString()!;
        return type == "NFC"
            ? new NfcNormalizer()
            : throw new KascadeException($"tokenizer.json: normalizer '{type}' is not supported (none or NFC)");
    }

    /// <summary>Special ids a <c>TemplateProcessing</c> post-processor puts before and after a single sequence (Llama 3's BOS).</summary>
    private static (int[] Prefix, int[] Suffix) Template(JsonElement root, IReadOnlyDictionary<string, int> specials)
    {
        if (!root.TryGetProperty("post_processor", out var pp) || pp.ValueKind == JsonValueKind.Null)
        {
            return ([], []);
        }
        var processors = pp.GetProperty("type").GetString() == "Sequence" ? pp.GetProperty("processors").EnumerateArray().ToList() : [pp];
        var template = processors.FirstOrDefault(p => p.GetProperty("type").GetString() == "TemplateProcessing");
        if (template.ValueKind != JsonValueKind.Object)
        {
            return ([], []);
        }
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var piece in template.GetProperty("single").EnumerateArray())
        {
            if (piece.TryGetProperty("Sequence", out _))
            {
                seenSequence = true;
            }
            else if (piece.TryGetProperty("SpecialToken", out var st))
            {
                string id = st.GetProperty("id").GetString()!;
                int tokenId = specials.TryGetValue(id, out int v) ? v : throw new KascadeException($"tokenizer.json: template token '{id}' is not an added token");
                (seenSequence ? suffix : prefix).Add(tokenId);
            }
        }
        return (prefix.ToArray(), suffix.ToArray());
    }

    private sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string original) => original.Normalize(System.Text.NormalizationForm.FormC);

        public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(System.Text.NormalizationForm.FormC);
    }
}
