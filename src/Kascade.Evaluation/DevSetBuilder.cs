using System.Text.Json;
using Kascade.Core;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation;

/// <summary>
/// Builds a calibration development set for a model: retrieval prompts (pass key and single needle at seeded
/// depths) over a haystack, alternating with LongBench multi-hop QA prompts (HotpotQA, 2WikiMQA, MuSiQue),
/// each cut to about <c>tokens</c> tokens (LongBench's own rule: keep the head and the tail, drop the middle).
/// </summary>
public static class DevSetBuilder
{
    private static readonly string[] MultiHopTasks = ["hotpotqa", "2wikimqa", "musique"];

    public static IReadOnlyList<(string Id, string Prompt)> Build(TextTokenizer tokenizer, Haystack haystack, string longBenchDirectory, int count, int tokens, int seed)
    {
        var longBench = MultiHopTasks
            .SelectMany(task => ReadPrompts(Path.Combine(longBenchDirectory, task + ".jsonl")).Select(p => (Id: $"{task}-{p.Id}", p.Prompt)))
            .ToList();
        var rng = new Random(seed);
        var examples = new List<(string, string)>();
        for (int i = 0; i < count; i++)
        {
            double depth = rng.NextDouble();
            int exampleSeed = seed * 1000 + i;
            if (i % 2 == 1 && longBench.Count > 0)
            {
                var (id, prompt) = longBench[(i / 2) % longBench.Count];
                examples.Add((id, Truncate(tokenizer, prompt, tokens)));
            }
            else if (i % 4 == 0)
            {
                examples.Add(($"passkey-{i}", RetrievalPrompts.PassKey(haystack, tokenizer, tokens, depth, exampleSeed).Prompt));
            }
            else
            {
                examples.Add(($"single-{i}", RetrievalPrompts.SingleNeedle(haystack, tokenizer, tokens, depth, exampleSeed).Prompt));
            }
        }
        return examples;
    }

    /// <summary>At most <paramref name="tokens"/> tokens of <paramref name="prompt"/>: the first and last halves when it is longer.</summary>
    public static string Truncate(TextTokenizer tokenizer, string prompt, int tokens)
    {
        var ids = tokenizer.Encode(prompt, addSpecialTokens: false);
        if (ids.Length <= tokens)
        {
            return prompt;
        }
        int half = tokens / 2;
        return tokenizer.Decode(ids[..half]) + tokenizer.Decode(ids[^(tokens - half)..]);
    }

    private static IEnumerable<(string Id, string Prompt)> ReadPrompts(string path)
    {
        if (!File.Exists(path))
        {
            throw new KascadeException($"LongBench file not found: {path}");
        }
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }
            yield return ReadLine(text, $"{path}:{line}", line);
        }
    }

    /// <summary>The id and prompt of one LongBench line; a line without them is one message naming it.</summary>
    private static (string Id, string Prompt) ReadLine(string text, string where, int line)
    {
        using var doc = JsonFields.Parse(System.Text.Encoding.UTF8.GetBytes(text), where);
        var fields = new JsonFields(doc.RootElement, where);
        return (fields.Optional("id")?.ToString() ?? line.ToString(System.Globalization.CultureInfo.InvariantCulture), fields.String("prompt"));
    }
}
