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
    private readonly Lazy<string[]> _words;

    private Haystack(string text)
    {
        _text = text;
        _sentenceEnds = SentenceEnd().Matches(text).Select(m => m.Index + m.Length).ToArray();
        _words = new(() => PlainWord().Matches(text).Select(m => m.Value).Where(w => w.All(char.IsAsciiLetterLower)).Distinct(StringComparer.Ordinal).ToArray());
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
        // Needles go after sentence ends inside the filler, deepest first so the offsets still to use stay valid;
        // needles at one spot are inserted last-listed first, so they appear in the order given.
        var ends = SentenceEnd().Matches(filler).Select(m => m.Index + m.Length).Prepend(0).Append(filler.Length).Distinct().ToArray();
        foreach (var (needle, depth) in needles.Select((n, i) => (n, i)).OrderByDescending(x => x.n.Depth).ThenByDescending(x => x.i).Select(x => x.n))
        {
            int target = (int)(depth * filler.Length);
            int at = ends.MinBy(e => Math.Abs(e - target));
            filler = filler.Insert(at, needle);
        }
        return filler + question;
    }

    /// <summary>The distinct lower-case words of 4 to 9 letters in the haystack, in order of first appearance (a vocabulary for word-list tasks).</summary>
    public IReadOnlyList<string> Words() => _words.Value;

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

    [GeneratedRegex(@"\b[A-Za-z]{4,9}\b")]
    private static partial Regex PlainWord();

    [GeneratedRegex(@"[.!?](?=\s)")]
    private static partial Regex SentenceEnd();
}
