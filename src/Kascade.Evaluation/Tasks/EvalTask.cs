using Kascade.Evaluation.Metrics;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation.Tasks;

/// <summary>
/// One prompt of a task at one context length, with what a correct completion contains and how it is scored.
/// </summary>
/// <param name="Depth">Where the (first) needle sits, 0 = start of the haystack, 1 = end; null for tasks without one.</param>
/// <param name="Classes">The label set of a classification task.</param>
/// <param name="FirstLineOnly">Score only the completion's first line (LongBench does this for trec, triviaqa, samsum and lsht).</param>
public sealed record EvalSample(
    string Task,
    int Index,
    string Id,
    string Prompt,
    IReadOnlyList<string> Answers,
    MetricKind Metric,
    int MaxNewTokens,
    double? Depth = null,
    IReadOnlyList<string>? Classes = null,
    bool FirstLineOnly = false)
{
    public double Score(string completion) =>
        Scoring.Score(Metric, FirstLineOnly ? Scoring.FirstLine(completion) : completion, Answers, Classes);
}

/// <summary>A source of evaluation prompts: generated (synthetic RULER-style tasks) or read (JSONL task files).</summary>
public interface IEvalTask
{
    string Name { get; }

    /// <summary>How many distinct samples exist (a JSONL file's lines); null when any number can be generated.</summary>
    int? Available { get; }

    /// <summary>
    /// Sample <paramref name="index"/> sized for a context of <paramref name="length"/> tokens (prompt, BOS and the
    /// completion together), the same for the same arguments.
    /// </summary>
    EvalSample Create(TextTokenizer tokenizer, int length, int index, int seed);
}

/// <summary>Token budgets shared by the tasks.</summary>
public static class PromptBudget
{
    /// <summary>
    /// Tokens left for the prompt text in a context of <paramref name="length"/>: the completion, the BOS token and a
    /// margin for tokens that merge differently once the pieces of a prompt are joined.
    /// </summary>
    public static int For(int length, int maxNewTokens) => length - maxNewTokens - 1 - Margin;

    private const int Margin = 8;
}
