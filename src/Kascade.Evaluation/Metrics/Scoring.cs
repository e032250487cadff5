using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Kascade.Evaluation.Metrics;

/// <summary>How a prediction is scored against its reference answers; every score lies in [0, 1].</summary>
public enum MetricKind
{
    /// <summary>LongBench qa_f1_score: token F1 after SQuAD normalisation (lower case, no punctuation or articles).</summary>
    QaF1,

    /// <summary>LongBench qa_f1_zh_score: F1 over the characters of the normalised texts (LongBench segments with jieba; we use characters).</summary>
    QaF1Zh,

    /// <summary>LongBench rouge_score: ROUGE-L F1 over whitespace tokens.</summary>
    RougeL,

    /// <summary>LongBench rouge_zh_score: ROUGE-L F1 over characters (LongBench: jieba words).</summary>
    RougeLZh,

    /// <summary>LongBench classification_score: 1 / (classes named in the prediction) when the reference class is among them.</summary>
    Classification,

    /// <summary>LongBench retrieval_score: the share of the numbers in the prediction that equal the reference "Paragraph N".</summary>
    Retrieval,

    /// <summary>LongBench retrieval_zh_score: as <see cref="Retrieval"/> with "段落N".</summary>
    RetrievalZh,

    /// <summary>LongBench count_score: the share of the numbers in the prediction that equal the reference count.</summary>
    Count,

    /// <summary>LongBench code_sim_score: indel similarity (fuzz.ratio) of the first code line of the prediction.</summary>
    CodeSim,

    /// <summary>1 when any reference appears in the prediction, ignoring case (RULER string_match_part).</summary>
    Contains,

    /// <summary>The share of the references that appear in the prediction, ignoring case (RULER string_match_all).</summary>
    ContainsAll,

    /// <summary>1 when the normalised prediction equals a normalised reference (SQuAD exact match).</summary>
    ExactMatch,
}

/// <summary>
/// The metrics of LongBench (THUDM/LongBench eval.py / metrics.py) and RULER, re-implemented to be read; each
/// returns a score in [0, 1] for one prediction.
/// </summary>
public static partial class Scoring
{
    /// <summary>Names used in task files (<c>"metric"</c>) and on the command line.</summary>
    public static IReadOnlyDictionary<string, MetricKind> Names { get; } = new Dictionary<string, MetricKind>(StringComparer.Ordinal)
    {
        ["qa_f1"] = MetricKind.QaF1,
        ["qa_f1_zh"] = MetricKind.QaF1Zh,
        ["rouge"] = MetricKind.RougeL,
        ["rouge_zh"] = MetricKind.RougeLZh,
        ["classification"] = MetricKind.Classification,
        ["retrieval"] = MetricKind.Retrieval,
        ["retrieval_zh"] = MetricKind.RetrievalZh,
        ["count"] = MetricKind.Count,
        ["code_sim"] = MetricKind.CodeSim,
        ["contains"] = MetricKind.Contains,
        ["contains_all"] = MetricKind.ContainsAll,
        ["exact"] = MetricKind.ExactMatch,
    };

    public static string NameOf(MetricKind kind) => Names.First(p => p.Value == kind).Key;

    /// <summary>
    /// The score of <paramref name="prediction"/>: the best over the references, except <see cref="MetricKind.ContainsAll"/>,
    /// which needs all of them. <paramref name="classes"/> is the label set of a classification task.
    /// </summary>
    public static double Score(MetricKind kind, string prediction, IReadOnlyList<string> references, IReadOnlyList<string>? classes = null)
    {
        if (references.Count == 0)
        {
            throw new ArgumentException("a sample needs at least one reference answer", nameof(references));
        }
        if (kind == MetricKind.ContainsAll)
        {
            return references.Count(r => prediction.Contains(r, StringComparison.OrdinalIgnoreCase)) / (double)references.Count;
        }
        return references.Max(r => kind switch
        {
            MetricKind.QaF1 => QaF1(prediction, r),
            MetricKind.QaF1Zh => QaF1Zh(prediction, r),
            MetricKind.RougeL => RougeL(Words(prediction), Words(r)),
            MetricKind.RougeLZh => RougeL(Characters(NormalizeZh(prediction)), Characters(NormalizeZh(r))),
            MetricKind.Classification => Classification(prediction, r, classes ?? throw new ArgumentException("classification needs the task's classes", nameof(classes))),
            MetricKind.Retrieval => Retrieval(prediction, r, ParagraphEn()),
            MetricKind.RetrievalZh => Retrieval(prediction, r, ParagraphZh()),
            MetricKind.Count => ShareOfNumbersEqualTo(prediction, r),
            MetricKind.CodeSim => CodeSim(prediction, r),
            MetricKind.Contains => prediction.Contains(r, StringComparison.OrdinalIgnoreCase) ? 1.0 : 0.0,
            MetricKind.ExactMatch => Normalize(prediction) == Normalize(r) ? 1.0 : 0.0,
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        });
    }

    /// <summary>SQuAD normalisation (LongBench normalize_answer): lower case, drop ASCII punctuation, drop a/an/the, collapse whitespace.</summary>
    public static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text.ToLowerInvariant())
        {
            if (!IsAsciiPunctuation(c))
            {
                sb.Append(c);
            }
        }
        return string.Join(' ', Article().Replace(sb.ToString(), " ").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>LongBench normalize_zh_answer: lower case, drop Chinese and ASCII punctuation and all whitespace.</summary>
    public static string NormalizeZh(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text.ToLowerInvariant())
        {
            if (!IsAsciiPunctuation(c) && !ChinesePunctuation.Contains(c) && !char.IsWhiteSpace(c))
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }

    public static double QaF1(string prediction, string reference) =>
        F1(Normalize(prediction).Split(' ', StringSplitOptions.RemoveEmptyEntries), Normalize(reference).Split(' ', StringSplitOptions.RemoveEmptyEntries));

    public static double QaF1Zh(string prediction, string reference) =>
        F1(Characters(NormalizeZh(prediction)), Characters(NormalizeZh(reference)));

    /// <summary>F1 of the multiset overlap of two token lists (0 when either is empty or nothing is shared).</summary>
    public static double F1(IReadOnlyList<string> prediction, IReadOnlyList<string> reference)
    {
        var counts = reference.GroupBy(t => t, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        int same = 0;
        foreach (var token in prediction)
        {
            if (counts.TryGetValue(token, out int left) && left > 0)
            {
                counts[token] = left - 1;
                same++;
            }
        }
        if (same == 0)
        {
            return 0;
        }
        double precision = same / (double)prediction.Count, recall = same / (double)reference.Count;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>
    /// ROUGE-L F1 (β = 1) from the longest common subsequence of two token lists. LongBench's <c>rouge</c> package
    /// takes the union LCS over '.'-separated sentences; for one sentence the two are the same.
    /// </summary>
    public static double RougeL(IReadOnlyList<string> prediction, IReadOnlyList<string> reference)
    {
        int lcs = LongestCommonSubsequence(prediction, reference);
        if (lcs == 0)
        {
            return 0;
        }
        double precision = lcs / (double)prediction.Count, recall = lcs / (double)reference.Count;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>LongBench classification_score: the classes named in the prediction, minus those that are only part of the reference; 1/count if the reference is one of them.</summary>
    public static double Classification(string prediction, string reference, IReadOnlyList<string> classes)
    {
        var named = classes.Where(c => prediction.Contains(c, StringComparison.Ordinal)).ToList();
        named.RemoveAll(c => reference.Contains(c, StringComparison.Ordinal) && c != reference);
        return named.Contains(reference) ? 1.0 / named.Count : 0.0;
    }

    /// <summary>The share of the numbers in the prediction that equal the reference's paragraph number.</summary>
    private static double Retrieval(string prediction, string reference, Regex paragraph)
    {
        var match = paragraph.Match(reference);
        return match.Success ? ShareOfNumbersEqualTo(prediction, match.Groups[1].Value) : 0.0;
    }

    private static double ShareOfNumbersEqualTo(string prediction, string number)
    {
        var numbers = Number().Matches(prediction);
        return numbers.Count == 0 ? 0.0 : numbers.Count(m => m.Value == number.Trim()) / (double)numbers.Count;
    }

    /// <summary>
    /// LongBench code_sim_score: the prediction's first line holding no backquote, '#' or '//' against the reference,
    /// by fuzz.ratio (indel similarity 2·LCS / total length, rounded to whole percent).
    /// </summary>
    public static double CodeSim(string prediction, string reference)
    {
        string line = prediction.TrimStart('\n').Split('\n').FirstOrDefault(l => !l.Contains('`') && !l.Contains('#') && !l.Contains("//", StringComparison.Ordinal)) ?? "";
        if (line.Length == 0 || reference.Length == 0)
        {
            return 0;
        }
        int lcs = LongestCommonSubsequence(Characters(line), Characters(reference));
        return Math.Round(200.0 * lcs / (line.Length + reference.Length), MidpointRounding.ToEven) / 100;
    }

    /// <summary>LongBench keeps only the first line of the prediction for these tasks (trec, triviaqa, samsum, lsht).</summary>
    public static string FirstLine(string prediction) => prediction.TrimStart('\n').Split('\n')[0];

    private static int LongestCommonSubsequence(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        var previous = new int[b.Count + 1];
        var current = new int[b.Count + 1];
        for (int i = 1; i <= a.Count; i++)
        {
            for (int j = 1; j <= b.Count; j++)
            {
                current[j] = string.Equals(a[i - 1], b[j - 1], StringComparison.Ordinal) ? previous[j - 1] + 1 : Math.Max(previous[j], current[j - 1]);
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Count];
    }

    private static string[] Words(string text) => text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Text elements (so a surrogate pair or combining sequence counts once).</summary>
    private static string[] Characters(string text)
    {
        var result = new List<string>(text.Length);
        var e = StringInfo.GetTextElementEnumerator(text);
        while (e.MoveNext())
        {
            result.Add(e.GetTextElement());
        }
        return [.. result];
    }

    /// <summary>Python's string.punctuation.</summary>
    private const string AsciiPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    private static bool IsAsciiPunctuation(char c) => AsciiPunctuation.Contains(c);

    private const string ChinesePunctuation = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.";

    [GeneratedRegex(@"\b(a|an|the)\b")]
    private static partial Regex Article();

    [GeneratedRegex(@"\d+")]
    private static partial Regex Number();

    [GeneratedRegex(@"Paragraph (\d+)")]
    private static partial Regex ParagraphEn();

    [GeneratedRegex(@"段落(\d+)")]
    private static partial Regex ParagraphZh();
}
