using Kascade.Core;
using Kascade.Evaluation.Metrics;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation.Tasks;

/// <summary>
/// The RULER-style tasks generated over a haystack (<see cref="RetrievalPrompts"/>), scored by RULER's
/// string_match_all: the share of the expected strings that appear in the completion.
/// </summary>
public sealed class SyntheticTask : IEvalTask
{
    /// <summary>Name → completion tokens the answer needs (RULER's budgets, fitted to this tokenizer's digit grouping).</summary>
    private static readonly Dictionary<string, int> Budgets = new(StringComparer.Ordinal)
    {
        ["passkey"] = 8,
        ["single"] = 12,
        ["multikey"] = 12,
        ["multivalue"] = 40,
        ["multiquery"] = 40,
        ["vt"] = 32,
        ["cwe"] = 64,
    };

    /// <summary>Needle depths used when none are given: ten, evenly spread.</summary>
    public static IReadOnlyList<double> DefaultDepths { get; } = [.. Enumerable.Range(0, 10).Select(i => 0.05 + 0.1 * i)];

    private readonly Haystack _haystack;
    private readonly IReadOnlyList<double> _depths;
    private readonly int _maxNewTokens;

    /// <param name="depths">Sample i puts its (first) needle at depths[i mod count].</param>
    /// <param name="maxNewTokens">Completion tokens; null = the task's own budget.</param>
    public SyntheticTask(string name, Haystack haystack, IReadOnlyList<double> depths, int? maxNewTokens = null)
    {
        if (!Budgets.TryGetValue(name, out int budget))
        {
            throw new KascadeException($"unknown task '{name}'; synthetic tasks are {string.Join(", ", Names)}, or give a .jsonl file or a directory of them");
        }
        if (depths.Count == 0 || depths.Any(d => d is < 0 or > 1))
        {
            throw new KascadeException("needle depths must lie in [0, 1]");
        }
        Name = name;
        _haystack = haystack;
        _depths = depths;
        _maxNewTokens = maxNewTokens ?? budget;
    }

    public static IReadOnlyCollection<string> Names => Budgets.Keys;

    public string Name { get; }

    public int? Available => null;

    public EvalSample Create(TextTokenizer tokenizer, int length, int index, int seed)
    {
        int tokens = PromptBudget.For(length, _maxNewTokens);
        double depth = _depths[index % _depths.Count];
        int sampleSeed = SampleSeed(seed, Name, length, index);
        (string prompt, string[] answers) = Name switch
        {
            "passkey" => One(RetrievalPrompts.PassKey(_haystack, tokenizer, tokens, depth, sampleSeed)),
            "single" => One(RetrievalPrompts.SingleNeedle(_haystack, tokenizer, tokens, depth, sampleSeed)),
            "multikey" => One(RetrievalPrompts.MultiKey(_haystack, tokenizer, tokens, depth, sampleSeed)),
            "multivalue" => RetrievalPrompts.MultiValue(_haystack, tokenizer, tokens, depth, sampleSeed),
            "multiquery" => RetrievalPrompts.MultiQuery(_haystack, tokenizer, tokens, depth, sampleSeed),
            "vt" => RetrievalPrompts.VariableTracking(_haystack, tokenizer, tokens, depth, sampleSeed),
            _ => RetrievalPrompts.CommonWords(_haystack, tokenizer, tokens, sampleSeed),
        };
        return new EvalSample(Name, index, $"{Name}-{length}-{index}", prompt, answers, MetricKind.ContainsAll, _maxNewTokens, Name == "cwe" ? null : depth);
    }

    private static (string, string[]) One((string Prompt, string Answer) p) => (p.Prompt, [p.Answer]);

    /// <summary>A seed from the run's seed and the sample's coordinates (FNV-1a; string.GetHashCode differs between processes).</summary>
    private static int SampleSeed(int seed, string task, int length, int index)
    {
        uint hash = 2166136261;
        foreach (char c in $"{seed}/{task}/{length}/{index}")
        {
            hash = (hash ^ c) * 16777619;
        }
        return (int)(hash & 0x7fffffff);
    }
}
