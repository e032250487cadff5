using System.Globalization;
using Kascade.Core;
using Kascade.Runtime.Tokenization;

namespace Kascade.Evaluation;

/// <summary>
/// RULER-style retrieval prompts in the formats the instrument model learned (models/kascade-instrument-21m/MODEL_CARD.md;
/// multi-value, multi-query, variable tracking and common words follow RULER's templates). Each returns the prompt
/// and the strings a correct answer contains; every answer can be read back from the prompt.
/// </summary>
public static class RetrievalPrompts
{
    /// <summary>Keys of the "special magic number" needles (the list the committed development set was built with).</summary>
    private static readonly string[] Words = ["garden", "river", "lantern", "copper", "meadow", "harbor", "violet", "summit", "canyon", "falcon", "orchard", "glacier", "ember", "willow", "thistle", "marble"];

    private static string Digits(Random rng, int digits) =>
        rng.Next((int)Math.Pow(10, digits - 1), (int)Math.Pow(10, digits)).ToString(CultureInfo.InvariantCulture);

    private static string MagicNumberNeedle(string word, string number) => $" One of the special magic numbers for {word} is: {number}.";

    private static string[] DistinctWords(Random rng, int count) => Words.OrderBy(_ => rng.Next()).Take(count).ToArray();

    /// <summary>Depths of the needles after the first, which sits at the controlled depth: uniform over the haystack.</summary>
    private static double OtherDepth(Random rng) => 0.02 + 0.96 * rng.NextDouble();

    /// <summary>A pass-key prompt and its answer (a 5-digit key).</summary>
    public static (string Prompt, string Answer) PassKey(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed)
    {
        var rng = new Random(seed);
        string key = Digits(rng, 5);
        string needle = $" The pass key is {key}. Remember it. {key} is the pass key.";
        string prompt = haystack.Build(tokenizer, tokens, [(needle, depth)], "\n\nWhat is the pass key? The pass key is", seed);
        return (prompt, key);
    }

    /// <summary>A single-needle prompt ("special magic number" for a word) and its 7-digit answer.</summary>
    public static (string Prompt, string Answer) SingleNeedle(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed)
    {
        var rng = new Random(seed);
        string word = Words[rng.Next(Words.Length)];
        string number = Digits(rng, 7);
        return (haystack.Build(tokenizer, tokens, [(MagicNumberNeedle(word, number), depth)], SingleQuestion(word), seed), number);
    }

    /// <summary>The asked-for needle at <paramref name="depth"/> among <paramref name="distractors"/> needles of other words (RULER niah_multikey).</summary>
    public static (string Prompt, string Answer) MultiKey(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed, int distractors = 3)
    {
        var rng = new Random(seed);
        var words = DistinctWords(rng, distractors + 1);
        var numbers = words.Select(_ => Digits(rng, 7)).ToArray();
        var needles = words.Select((w, i) => (MagicNumberNeedle(w, numbers[i]), i == 0 ? depth : OtherDepth(rng))).ToArray();
        return (haystack.Build(tokenizer, tokens, needles, SingleQuestion(words[0]), seed), numbers[0]);
    }

    /// <summary>Several numbers for one word, the first at <paramref name="depth"/>; all are asked for (RULER niah_multivalue).</summary>
    public static (string Prompt, string[] Answers) MultiValue(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed, int values = 4)
    {
        var rng = new Random(seed);
        string word = Words[rng.Next(Words.Length)];
        var numbers = Enumerable.Range(0, values).Select(_ => Digits(rng, 7)).Distinct().ToArray();
        var needles = numbers.Select((n, i) => (MagicNumberNeedle(word, n), i == 0 ? depth : OtherDepth(rng))).ToArray();
        string question = $"\n\nWhat are all the special magic numbers for {word} mentioned in the provided text? The special magic numbers for {word} mentioned in the provided text are";
        return (haystack.Build(tokenizer, tokens, needles, question, seed), numbers);
    }

    /// <summary>Numbers for several words, the first at <paramref name="depth"/>; all words are asked for at once (RULER niah_multiquery).</summary>
    public static (string Prompt, string[] Answers) MultiQuery(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed, int queries = 4)
    {
        var rng = new Random(seed);
        var words = DistinctWords(rng, queries);
        var numbers = words.Select(_ => Digits(rng, 7)).ToArray();
        var needles = words.Select((w, i) => (MagicNumberNeedle(w, numbers[i]), i == 0 ? depth : OtherDepth(rng))).ToArray();
        string list = string.Join(", ", words[..^1]) + " and " + words[^1];
        string question = $"\n\nWhat are all the special magic numbers for {list} mentioned in the provided text? The special magic numbers for {list} mentioned in the provided text are";
        return (haystack.Build(tokenizer, tokens, needles, question, seed), numbers);
    }

    /// <summary>
    /// A chain of variable assignments (VAR A = 12345, VAR B = VAR A, …) whose first link sits at
    /// <paramref name="depth"/> and the rest between it and the end; the answer is every variable in the chain (RULER vt).
    /// </summary>
    public static (string Prompt, string[] Answers) VariableTracking(Haystack haystack, TextTokenizer tokenizer, int tokens, double depth, int seed, int hops = 4)
    {
        var rng = new Random(seed);
        string value = Digits(rng, 5);
        var names = new List<string>();
        while (names.Count < hops + 1)
        {
            string name = new([.. Enumerable.Range(0, 5).Select(_ => (char)('A' + rng.Next(26)))]);
            if (!names.Contains(name))
            {
                names.Add(name);
            }
        }
        var needles = names.Select((n, i) => (i == 0 ? $" VAR {n} = {value}." : $" VAR {n} = VAR {names[i - 1]}.", depth + (0.98 - depth) * i / (hops + 1))).ToArray();
        string question = $"\n\nQuestion: Find all variables that are assigned the value {value} in the text above. Answer: According to the chain(s) of variables assigned in the text above, {hops + 1} variables are assigned the value {value}, they are:";
        return (haystack.Build(tokenizer, tokens, needles, question, seed), [.. names]);
    }

    /// <summary>
    /// A numbered word list in which <paramref name="common"/> words appear far more often than the others; the
    /// answer is those words (RULER cwe). The common frequency scales with the length, at most 30 and always above
    /// the others' 3.
    /// </summary>
    public static (string Prompt, string[] Answers) CommonWords(Haystack haystack, TextTokenizer tokenizer, int tokens, int seed, int common = 10)
    {
        const int UncommonFrequency = 3, MaxCommonFrequency = 30, MinCommonFrequency = UncommonFrequency + 2;
        var rng = new Random(seed);
        var vocabulary = haystack.Words().OrderBy(_ => rng.Next()).ToArray();
        var commonWords = vocabulary[..common];
        var others = vocabulary[common..];
        string Prompt(int frequency, int uncommon)
        {
            var order = new Random(seed);
            var list = commonWords.SelectMany(w => Enumerable.Repeat(w, frequency))
                .Concat(others.Take(uncommon).SelectMany(w => Enumerable.Repeat(w, UncommonFrequency)))
                .OrderBy(_ => order.Next()).ToArray();
            string numbered = string.Join("\n", list.Select((w, i) => $"{i + 1}. {w}"));
            return "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n" +
                numbered + $"\nQuestion: What are the {common} most common words in the above list? Answer: The top {common} words that appear most often in the list are:";
        }
        int Tokens(string text) => tokenizer.Encode(text, addSpecialTokens: false).Length;
        // Common words take about a quarter of the list, by the per-entry token cost of a probe list.
        string probe = Prompt(MinCommonFrequency, 0);
        double perEntry = (Tokens(probe) - Tokens(probe.Split('\n')[0])) / (double)(common * MinCommonFrequency);
        int frequency = Math.Clamp((int)(tokens / perEntry / (4 * common)), MinCommonFrequency, MaxCommonFrequency);
        if (Tokens(Prompt(frequency, 0)) > tokens)
        {
            throw new KascadeException($"{tokens} tokens are too few for a common-words list of {common} words");
        }
        int lo = 0, hi = others.Length;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (Tokens(Prompt(frequency, mid)) <= tokens)
            {
                lo = mid;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return (Prompt(frequency, lo), commonWords);
    }

    private static string SingleQuestion(string word) =>
        $"\n\nWhat is the special magic number for {word} mentioned in the provided text? The special magic number for {word} mentioned in the provided text is";
}
