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
            var (doc, root) = TokenizerJson.Open(json);
            using (doc)
            {
                jsonProblem = TokenizerJson.Unsupported(root);
                if (jsonProblem is null)
                {
                    return FromTokenizerJson(root);
                }
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
        var (doc, root) = TokenizerJson.Open(path);
        using (doc)
        {
            return FromTokenizerJson(root);
        }
    }

    private static TextTokenizer FromTokenizerJson(JsonFields root)
    {
        var parsed = TokenizerJson.Parse(root);
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
        IReadOnlyList<int> ids;
        try
        {
            ids = _encode(text);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new KascadeException($"tokenizer.json: the pre-tokenizer pattern {e.Pattern} took more than {e.MatchTimeout.TotalSeconds:0.#} s on one piece of this text (catastrophic backtracking): the tokenizer file is broken");
        }
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
