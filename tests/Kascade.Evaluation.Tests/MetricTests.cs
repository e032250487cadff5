using Kascade.Evaluation.Metrics;
using Xunit;

namespace Kascade.Evaluation.Tests;

/// <summary>Each metric against cases worked out by hand (the arithmetic is in the comments).</summary>
public class MetricTests
{
    private const double Exact = 1e-12;

    [Fact]
    public void Qa_f1_normalises_then_counts_shared_tokens()
    {
        // "cat sat on mat" vs "cat on mat": 3 shared, P = 3/4, R = 1, F1 = 6/7.
        Assert.Equal(6.0 / 7, Scoring.QaF1("The cat sat on the mat!", "a cat on a mat"), Exact);
        Assert.Equal(1.0, Scoring.QaF1("Bob Dylan.", "bob dylan"), Exact);
        Assert.Equal(0.0, Scoring.QaF1("Paris", "London"), Exact);
        // Only an article: both sides normalise to nothing, so nothing is shared.
        Assert.Equal(0.0, Scoring.QaF1("the", "the"), Exact);
        // "yes yes" vs "yes": 1 shared, P = 1/2, R = 1, F1 = 2/3.
        Assert.Equal(2.0 / 3, Scoring.QaF1("yes yes", "yes"), Exact);
    }

    [Fact]
    public void Qa_f1_zh_works_on_characters_without_punctuation()
    {
        // [北, 京] vs [北, 京, 市]: 2 shared, P = 1, R = 2/3, F1 = 0.8.
        Assert.Equal(0.8, Scoring.QaF1Zh("北京。", "北京市"), Exact);
        Assert.Equal(1.0, Scoring.QaF1Zh(" 体验 服！", "体验服"), Exact);
    }

    [Fact]
    public void Rouge_l_is_the_f1_of_the_longest_common_subsequence()
    {
        // LCS "the cat was under the bed" = 6 tokens; P = 6/7, R = 1, F = 12/13.
        Assert.Equal(12.0 / 13, Scoring.Score(MetricKind.RougeL, "the cat was found under the bed", ["the cat was under the bed"]), Exact);
        // Order matters: "b a" vs "a b" shares a subsequence of 1: P = R = 1/2.
        Assert.Equal(0.5, Scoring.Score(MetricKind.RougeL, "b a", ["a b"]), Exact);
        // Characters for Chinese: 会议 决定 vs 会议决定了: LCS 4, P = 1, R = 4/5, F = 8/9.
        Assert.Equal(8.0 / 9, Scoring.Score(MetricKind.RougeLZh, "会议 决定", ["会议决定了"]), Exact);
    }

    [Fact]
    public void Classification_divides_by_the_classes_named_and_ignores_parts_of_the_answer()
    {
        string[] classes = ["Food", "Date", "Other location", "location", "Individual"];
        Assert.Equal(1.0, Scoring.Classification("Individual", "Individual", classes), Exact);
        Assert.Equal(0.5, Scoring.Classification("Date or Food", "Food", classes), Exact);
        Assert.Equal(0.0, Scoring.Classification("Date", "Food", classes), Exact);
        // "location" is part of the reference "Other location", so naming it does not count against the answer.
        Assert.Equal(1.0, Scoring.Classification("Other location", "Other location", classes), Exact);
    }

    [Fact]
    public void Retrieval_and_count_take_the_share_of_numbers_that_are_right()
    {
        Assert.Equal(0.5, Scoring.Score(MetricKind.Retrieval, "Paragraph 19, or maybe Paragraph 3", ["Paragraph 19"]), Exact);
        Assert.Equal(1.0, Scoring.Score(MetricKind.RetrievalZh, "答案是段落5", ["段落5"]), Exact);
        Assert.Equal(0.0, Scoring.Score(MetricKind.Retrieval, "I do not know", ["Paragraph 2"]), Exact);
        Assert.Equal(1.0, Scoring.Score(MetricKind.Count, "46 paragraphs, 46 in all", ["46"]), Exact);
        Assert.Equal(1.0 / 3, Scoring.Score(MetricKind.Count, "12, 46 or 7", ["46"]), Exact);
    }

    [Fact]
    public void Code_similarity_scores_the_first_code_line_by_indel_ratio()
    {
        // The comment line and the fence are skipped; the code line equals the reference.
        Assert.Equal(1.0, Scoring.CodeSim("```\n# next line\n    if x:\n        pass", "    if x:"), Exact);
        // "abcd" vs "abce": LCS 3 of 8 characters → 2·3/8 = 75%.
        Assert.Equal(0.75, Scoring.CodeSim("abcd", "abce"), Exact);
        // "kitten" vs "sitting": LCS "ittn" = 4 of 13 → 61.5% → rounds to 62%.
        Assert.Equal(0.62, Scoring.CodeSim("kitten", "sitting"), Exact);
        Assert.Equal(0.0, Scoring.CodeSim("# only a comment", "x = 1"), Exact);
    }

    [Fact]
    public void String_matches_ignore_case_and_exact_match_normalises()
    {
        Assert.Equal(1.0, Scoring.Score(MetricKind.Contains, "The answer is PARIS.", ["paris", "rome"]), Exact);
        Assert.Equal(0.0, Scoring.Score(MetricKind.Contains, "The answer is Berlin.", ["paris"]), Exact);
        Assert.Equal(0.5, Scoring.Score(MetricKind.ContainsAll, "values 1234567 and 7654321", ["1234567", "2222222"]), Exact);
        Assert.Equal(1.0, Scoring.Score(MetricKind.ExactMatch, "The Beatles!", ["beatles"]), Exact);
        Assert.Equal(0.0, Scoring.Score(MetricKind.ExactMatch, "The Beatles and more", ["beatles"]), Exact);
    }

    [Fact]
    public void The_best_reference_counts_and_first_line_scoring_cuts_the_rest()
    {
        Assert.Equal(1.0, Scoring.Score(MetricKind.QaF1, "fifty-five", ["55", "fifty-five"]), Exact);
        var sample = new Tasks.EvalSample("triviaqa", 0, "0", "p", ["Paris"], MetricKind.QaF1, 32, FirstLineOnly: true);
        Assert.Equal(1.0, sample.Score("\nParis\nLondon Rome Berlin"), Exact);
        Assert.Equal(0.0, sample.Score("London\nParis"), Exact);
        Assert.Throws<ArgumentException>(() => Scoring.Score(MetricKind.Contains, "x", []));
    }
}
