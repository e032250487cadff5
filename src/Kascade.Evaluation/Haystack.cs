using System.Text.RegularExpressions;
using Kascade.Core;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation;

/// <summary>
/// Filler text for needle-in-a-haystack prompts: the essays of a directory, concatenated in name order, cut to a
/// token budget; needles go in at sentence boundaries at a chosen depth (RULER's construction).
/// </summary>
public sealed partial class Haystack
{
    private readonly string _text;
    private readonly int[] _sentenceEnds;

    private Haystack(string text)
    {
        _text = text;
        _sentenceEnds = SentenceEnd().Matches(text).Select(m => m.Index + m.Length).ToArray();
    }

    public static Haystack Load(string directory)
    {
        if (!Directory.Exists(directory))
        {
            throw new KascadeException($"haystack directory not found: {directory}");
        }
        var files = Directory.GetFiles(directory, "*.txt").Order(StringComparer.Ordinal).ToArray();
        if (files.Length == 0)
        {
            throw new KascadeException($"no .txt files in the haystack directory {directory}");
        }
        return new Haystack(string.Join("\n\n", files.Select(f => File.ReadAllText(f).Trim())));
    }

    /// <summary>
    /// A prompt of about <paramref name="totalTokens"/> tokens: haystack text starting at a seeded offset with each
    /// needle inserted after the sentence nearest its depth (0 = start, 1 = end), then <paramref name="question"/>.
    /// </summary>
    public string Build(TextTokenizer tokenizer, int totalTokens, IReadOnlyList<(string Needle, double Depth)> needles, string question, int seed)
    {
        int reserve = tokenizer.Encode(question, addSpecialTokens: false).Length + needles.Sum(n => tokenizer.Encode(n.Needle, addSpecialTokens: false).Length) + 2;
        int budget = totalTokens - reserve;
        if (budget < 16)
        {
            throw new KascadeException($"{totalTokens} tokens leave no room for haystack text around the needles and question");
        }
        var rng = new Random(seed);
        int start = _sentenceEnds[rng.Next(_sentenceEnds.Length / 2)];
        string filler = Take(tokenizer, start, budget);
        // Needles go after sentence ends inside the filler, deepest last so earlier offsets stay valid.
        var ends = SentenceEnd().Matches(filler).Select(m => m.Index + m.Length).Prepend(0).Append(filler.Length).Distinct().ToArray();
        foreach (var (needle, depth) in needles.OrderByDescending(n => n.Depth))
        {
            int target = (int)(depth * filler.Length);
            int at = ends.MinBy(e => Math.Abs(e - target));
            filler = filler.Insert(at, needle);
        }
        return filler + question;
    }

    /// <summary>Haystack text from <paramref name="start"/> (wrapping around) of at most <paramref name="tokens"/> tokens, cut at a sentence end.</summary>
    private string Take(TextTokenizer tokenizer, int start, int tokens)
    {
        string doubled = _text + "\n\n" + _text;
        // ~4 characters a token, then trim by sentences until the count fits.
        int length = Math.Min(doubled.Length - start, tokens * 6);
        string piece = doubled.Substring(start, length);
        while (tokenizer.Encode(piece, addSpecialTokens: false).Length > tokens)
        {
            int cut = piece.LastIndexOf(". ", (int)(piece.Length * 0.97), StringComparison.Ordinal);
            piece = cut > 0 ? piece[..(cut + 1)] : piece[..(int)(piece.Length * 0.97)];
        }
        return piece;
    }

    [GeneratedRegex(@"[.!?](?=\s)")]
    private static partial Regex SentenceEnd();
}

/// <summary>The instrument model's retrieval prompt formats (models/kascade-instrument-21m/MODEL_CARD.md).</summary>
public static class RetrievalPrompts
{
    private static readonly string[] Words = ["garden", "river", "lantern", "copper", "meadow", "harbor", "violet", "summit", "canyon", "falcon", "orchard", "glacier", "ember", "willow", "thistle", "marble"];

    /// <summary>A pass-key prompt and its answer (a 5-digit key).</summary>
    public static (string Prompt, string Answer) PassKey(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed)
    {
        var rng = new Random(seed);
        string key = rng.Next(10000, 100000).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string needle = $" The pass key is {key}. Remember it. {key} is the pass key.";
        string prompt = haystack.Build(tokenizer, tokens, [(needle, depth)], "\n\nWhat is the pass key? The pass key is", seed);
        return (prompt, key);
    }

    /// <summary>A single-needle prompt ("special magic number" for a word) and its 7-digit answer.</summary>
    public static (string Prompt, string Answer) SingleNeedle(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed)
    {
        var rng = new Random(seed);
        string word = Words[rng.Next(Words.Length)];
        string number = rng.Next(1000000, 10000000).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string needle = $" One of the special magic numbers for {word} is: {number}.";
        string question = $"\n\nWhat is the special magic number for {word} mentioned in the provided text? The special magic number for {word} mentioned in the provided text is";
        return (haystack.Build(tokenizer, tokens, [(needle, depth)], question, seed), number);
    }
}
