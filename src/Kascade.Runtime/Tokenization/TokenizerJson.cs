using System.Text.Json;
using System.Text.RegularExpressions;
using Kascade.Core;
using Microsoft.ML.Tokenizers;

namespace Kascade.Runtime.Tokenization;

/// <summary>
/// Reads the parts of HF <c>tokenizer.json</c> a byte-level BPE needs and builds a <see cref="BpeTokenizer"/>. Every
/// field is read with its type checked (<see cref="JsonFields"/>), and every regular expression the file supplies is
/// compiled with a match timeout, so a hostile pattern (catastrophic backtracking) ends in an error, not a hang.
/// </summary>
internal static class TokenizerJson
{
    internal sealed record Parsed(BpeTokenizer Tokenizer, int[] Prefix, int[] Suffix, IReadOnlyDictionary<string, int> SpecialTokens);

    private const string File = "tokenizer.json";

    /// <summary>
    /// How long one regex match may take. The Llama 3 split pattern matches a piece in microseconds; a pattern that
    /// needs a second on one piece is backtracking exponentially.
    /// </summary>
    internal static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Why this tokenizer.json cannot be loaded as byte-level BPE; null when it can.</summary>
    internal static string? Unsupported(JsonFields root)
    {
        string modelType = root.Object("model").OptionalString("type") ?? "";
        if (modelType != "BPE")
        {
            return $"tokenizer.json: model type '{modelType}' is not supported (byte-level BPE, or SentencePiece via tokenizer.model)";
        }
        return root.OptionalObject("decoder")?.OptionalString("type") == "ByteLevel"
            ? null
            : "tokenizer.json: only byte-level BPE is supported; for SentencePiece-style BPE put tokenizer.model beside it";
    }

    /// <summary>The root object of <paramref name="path"/>; the caller disposes the document.</summary>
    internal static (JsonDocument Document, JsonFields Root) Open(string path) => JsonFields.Load(path, File);

    internal static Parsed Parse(JsonFields root)
    {
        if (Unsupported(root) is { } problem)
        {
            throw new KascadeException(problem);
        }
        var model = root.Object("model");
        var vocabObject = model.Object("vocab");
        var vocab = vocabObject.Properties
            .Select(p => new KeyValuePair<string, int>(p.Name, JsonFields.AsInt(p.Value, vocabObject.Where(p.Name), 0)))
            .ToList();
        var mergeValues = model.Array("merges");
        var merges = mergeValues.Select((e, i) => Merge(e, JsonFields.Index(model.Where("merges"), i))).ToList();
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        var added = root.OptionalArray("added_tokens");
        for (int i = 0; i < added.Count; i++)
        {
            var token = new JsonFields(added[i], File, $"added_tokens[{i}]");
            string content = token.String("content");
            if (content.Length == 0)
            {
                throw token.Error("content", "is empty");
            }
            specials[content] = token.Int("id", 0);
        }
        var preTokenizer = root.OptionalObject("pre_tokenizer");
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            SpecialTokens = specials,
            ByteLevel = true,
            PreTokenizer = new SplitPreTokenizer(preTokenizer is { } pre ? Stages(pre) : [], specials.Keys),
            Normalizer = ParseNormalizer(root),
        };
        var (prefix, suffix) = Template(root, specials);
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new KascadeException($"tokenizer.json: the BPE model is inconsistent ({e.Message})");
        }
        return new Parsed(bpe, prefix, suffix, specials);
    }

    /// <summary>A merge as <c>"a b"</c> or (tokenizers ≥ 0.20) <c>["a", "b"]</c>.</summary>
    private static string Merge(JsonElement e, string where)
    {
        if (e.ValueKind == JsonValueKind.Array)
        {
            var pair = JsonFields.AsArray(e, where);
            return pair.Count == 2
                ? $"{JsonFields.AsString(pair[0], JsonFields.Index(where, 0))} {JsonFields.AsString(pair[1], JsonFields.Index(where, 1))}"
                : throw new KascadeException($"{where} must be a pair of strings, not a list of {pair.Count}");
        }
        string merge = JsonFields.AsString(e, where);
        return merge.Split(' ').Length == 2 ? merge : throw new KascadeException($"{where} must be two tokens separated by one space, not '{merge}'");
    }

    /// <summary>A regex from the file, compiled with <see cref="MatchTimeout"/>; an invalid pattern is one message.</summary>
    internal static Regex Compile(string pattern, string where)
    {
        try
        {
            return new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout);
        }
        catch (ArgumentException e)
        {
            throw new KascadeException($"{where} is not a valid regular expression ({e.Message})");
        }
    }

    private static List<Func<string, int, int, IEnumerable<(int, int)>>> Stages(JsonFields pre)
    {
        var stages = new List<Func<string, int, int, IEnumerable<(int, int)>>>();
        string type = pre.String("type");
        switch (type)
        {
            case "Sequence":
                var list = pre.Array("pretokenizers");
                for (int i = 0; i < list.Count; i++)
                {
                    stages.AddRange(Stages(new JsonFields(list[i], File, $"{pre.Field("pretokenizers")}[{i}]")));
                }
                break;
            case "Split":
                string behavior = pre.OptionalString("behavior") ?? "Isolated";
                bool invert = pre.OptionalBool("invert") ?? false;
                if (behavior != "Isolated" || invert)
                {
                    throw new KascadeException($"tokenizer.json: Split with behavior '{behavior}'{(invert ? " inverted" : "")} is not supported (Isolated only)");
                }
                var pattern = pre.Object("pattern");
                var regex = pattern.Has("Regex")
                    ? Compile(pattern.String("Regex"), pattern.Where("Regex"))
                    : Compile(Regex.Escape(pattern.String("String")), pattern.Where("String"));
                stages.Add(SplitPreTokenizer.RegexStage(regex));
                break;
            case "Digits":
                stages.Add(SplitPreTokenizer.DigitsStage(pre.OptionalBool("individual_digits") ?? false));
                break;
            case "ByteLevel":
                if (pre.OptionalBool("add_prefix_space") == true)
                {
                    throw new KascadeException("tokenizer.json: ByteLevel with add_prefix_space = true is not supported");
                }
                if (pre.OptionalBool("use_regex") ?? true)
                {
                    stages.Add(SplitPreTokenizer.RegexStage(Compile(SplitPreTokenizer.Gpt2Pattern, "the GPT-2 pattern")));
                }
                break;
            default:
                throw new KascadeException($"tokenizer.json: pre-tokenizer '{type}' is not supported (Sequence, Split, Digits, ByteLevel)");
        }
        return stages;
    }

    private static Normalizer? ParseNormalizer(JsonFields root)
    {
        if (root.OptionalObject("normalizer") is not { } n)
        {
            return null;
        }
        string type = n.String("type");
        return type == "NFC"
            ? new NfcNormalizer()
            : throw new KascadeException($"tokenizer.json: normalizer '{type}' is not supported (none or NFC)");
    }

    /// <summary>Special ids a <c>TemplateProcessing</c> post-processor puts before and after a single sequence (Llama 3's BOS).</summary>
    private static (int[] Prefix, int[] Suffix) Template(JsonFields root, IReadOnlyDictionary<string, int> specials)
    {
        if (root.OptionalObject("post_processor") is not { } pp)
        {
            return ([], []);
        }
        var processors = pp.String("type") == "Sequence"
            ? pp.Array("processors").Select((p, i) => new JsonFields(p, File, $"{pp.Field("processors")}[{i}]")).ToList()
            : [pp];
        int at = processors.FindIndex(p => p.String("type") == "TemplateProcessing");
        if (at < 0)
        {
            return ([], []);
        }
        var template = processors[at];
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        var single = template.Array("single");
        for (int i = 0; i < single.Count; i++)
        {
            var piece = new JsonFields(single[i], File, $"{template.Field("single")}[{i}]");
            if (piece.Has("Sequence"))
            {
                seenSequence = true;
            }
            else if (piece.OptionalObject("SpecialToken") is { } st)
            {
                string id = st.String("id");
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
