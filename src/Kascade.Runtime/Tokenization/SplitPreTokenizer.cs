using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Kascade.Runtime.Tokenization;

/// <summary>
/// The HF pre-tokenizer pipeline as <c>Microsoft.ML.Tokenizers</c> sees it: added/special tokens are cut
/// out first and kept whole, then each <c>Split</c>/<c>Digits</c>/<c>ByteLevel</c> stage splits every
/// piece the previous stage produced ("Isolated": matches and the gaps between them both become pieces).
/// </summary>
public sealed class SplitPreTokenizer : PreTokenizer
{
    /// <summary>GPT-2's pattern, which HF's ByteLevel pre-tokenizer applies when <c>use_regex</c> is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly IReadOnlyList<Func<string, int, int, IEnumerable<(int Offset, int Length)>>> _stages;
    private readonly Regex? _specialTokens;

    public SplitPreTokenizer(IReadOnlyList<Func<string, int, int, IEnumerable<(int Offset, int Length)>>> stages, IEnumerable<string> specialTokens)
    {
        _stages = stages;
        var specials = specialTokens.OrderByDescending(s => s.Length).Select(Regex.Escape).ToList();
        _specialTokens = specials.Count > 0 ? new Regex(string.Join('|', specials), RegexOptions.Compiled | RegexOptions.CultureInvariant) : null;
    }

    /// <summary>A stage that splits a piece by <paramref name="regex"/>, keeping matches and gaps (HF "Isolated").</summary>
    public static Func<string, int, int, IEnumerable<(int, int)>> RegexStage(Regex regex) => (text, offset, length) => Isolated(regex, text, offset, length);

    /// <summary>HF <c>Digits(individual_digits)</c>: every numeric character its own piece, or runs of them.</summary>
    public static Func<string, int, int, IEnumerable<(int, int)>> DigitsStage(bool individual) =>
        RegexStage(new Regex(individual ? @"\p{N}" : @"\p{N}+", RegexOptions.Compiled | RegexOptions.CultureInvariant));

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => PreTokenize(text.AsSpan());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        string s = text.ToString();
        var pieces = new List<(int, int)>();
        int last = 0;
        if (_specialTokens is not null)
        {
            foreach (Match m in _specialTokens.Matches(s))
            {
                Split(s, last, m.Index - last, 0, pieces);
                pieces.Add((m.Index, m.Length));
                last = m.Index + m.Length;
            }
        }
        Split(s, last, s.Length - last, 0, pieces);
        return pieces;
    }

    private void Split(string text, int offset, int length, int stage, List<(int, int)> pieces)
    {
        if (length == 0)
        {
            return;
        }
        if (stage == _stages.Count)
        {
            pieces.Add((offset, length));
            return;
        }
        foreach (var (o, l) in _stages[stage](text, offset, length))
        {
            Split(text, o, l, stage + 1, pieces);
        }
    }

    private static IEnumerable<(int, int)> Isolated(Regex regex, string text, int offset, int length)
    {
        int cursor = offset;
        foreach (Match m in regex.Matches(text.Substring(offset, length)))
        {
            if (m.Length == 0)
            {
                continue;
            }
            int start = offset + m.Index;
            if (start > cursor)
            {
                yield return (cursor, start - cursor);
            }
            yield return (start, m.Length);
            cursor = start + m.Length;
        }
        if (cursor < offset + length)
        {
            yield return (cursor, offset + length - cursor);
        }
    }
}
