using System.Text.RegularExpressions;
using Kascade.Core;
using Kascade.Evaluation.Metrics;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;
using Xunit;

namespace Kascade.Evaluation.Tests;

/// <summary>Every generated answer can be worked out from its prompt alone; prompts fit their context and are reproducible.</summary>
public partial class TaskTests
{
    private static readonly Lazy<TextTokenizer> Tokenizer = new(() => TextTokenizer.Load(TestPaths.InstrumentModel));
    private static readonly Lazy<Haystack> Hay = new(() => Haystack.Load(Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack")));

    private static EvalSample Sample(string task, int length, int index, int seed = 3) =>
        new SyntheticTask(task, Hay.Value, SyntheticTask.DefaultDepths).Create(Tokenizer.Value, length, index, seed);

    public static TheoryData<string, int, int> Cases()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var task in SyntheticTask.Names)
        {
            foreach (var (length, index) in new[] { (1024, 0), (2048, 7), (4096, 3) })
            {
                data.Add(task, length, index);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Answers_follow_from_the_prompt_and_the_prompt_fits(string task, int length, int index)
    {
        var s = Sample(task, length, index);
        Assert.Equal(s.Answers.Order(), AnswersReadFrom(task, s.Prompt).Order());
        int tokens = Tokenizer.Value.Encode(s.Prompt).Length;
        Assert.InRange(tokens + s.MaxNewTokens, length * 0.85, length);
        Assert.Equal(MetricKind.ContainsAll, s.Metric);
        Assert.Equal(1.0, s.Score(string.Join(", ", s.Answers)));
    }

    [Fact]
    public void Prompts_are_reproducible_and_differ_between_samples()
    {
        Assert.Equal(Sample("multikey", 1024, 4).Prompt, Sample("multikey", 1024, 4).Prompt);
        Assert.NotEqual(Sample("multikey", 1024, 4).Prompt, Sample("multikey", 1024, 5).Prompt);
        Assert.NotEqual(Sample("multikey", 1024, 4).Prompt, Sample("multikey", 1024, 4, seed: 4).Prompt);
    }

    [Theory]
    [InlineData("passkey")]
    [InlineData("single")]
    public void The_needle_sits_at_its_controlled_depth(string task)
    {
        for (int index = 0; index < SyntheticTask.DefaultDepths.Count; index++)
        {
            var s = Sample(task, 2048, index);
            int question = s.Prompt.LastIndexOf("\n\nWhat is", StringComparison.Ordinal);
            int needle = s.Prompt.IndexOf(s.Answers[0], StringComparison.Ordinal);
            Assert.Equal(SyntheticTask.DefaultDepths[index], s.Depth);
            Assert.InRange(needle / (double)question, s.Depth!.Value - 0.05, s.Depth.Value + 0.05);
        }
    }

    [Fact]
    public void Unknown_tasks_and_bad_depths_are_refused()
    {
        Assert.Contains("unknown task 'needle'", Assert.Throws<KascadeException>(() => new SyntheticTask("needle", Hay.Value, SyntheticTask.DefaultDepths)).Message);
        Assert.Contains("depths", Assert.Throws<KascadeException>(() => new SyntheticTask("passkey", Hay.Value, [1.5])).Message);
        Assert.Contains("too few", Assert.Throws<KascadeException>(() => Sample("cwe", 200, 0)).Message);
    }

    /// <summary>Solves a task from its prompt text, independently of the generator.</summary>
    private static IEnumerable<string> AnswersReadFrom(string task, string prompt)
    {
        var magic = MagicNumber().Matches(prompt).Select(m => (Word: m.Groups[1].Value, Number: m.Groups[2].Value)).ToList();
        switch (task)
        {
            case "passkey":
                var keys = PassKeyNeedle().Matches(prompt).Select(m => m.Groups[1].Value).Distinct().ToList();
                Assert.Single(keys);
                return keys;
            case "single":
            case "multikey":
                string asked = Regex.Match(prompt, @"What is the special magic number for (\w+) mentioned").Groups[1].Value;
                Assert.Equal(task == "single" ? 1 : 4, magic.Count);
                Assert.Equal(magic.Count, magic.Select(m => m.Word).Distinct().Count());
                return magic.Where(m => m.Word == asked).Select(m => m.Number);
            case "multivalue":
                string word = Regex.Match(prompt, @"What are all the special magic numbers for (\w+) mentioned").Groups[1].Value;
                Assert.All(magic, m => Assert.Equal(word, m.Word));
                return magic.Select(m => m.Number);
            case "multiquery":
                var words = Regex.Match(prompt, @"What are all the special magic numbers for ([\w, ]+) mentioned").Groups[1].Value.Replace(" and ", ", ", StringComparison.Ordinal).Split(", ");
                Assert.Equal(words.Order(), magic.Select(m => m.Word).Order());
                return magic.Select(m => m.Number);
            case "vt":
                string value = Regex.Match(prompt, @"assigned the value (\d+) in the text above").Groups[1].Value;
                var chain = new List<string>();
                foreach (Match m in Regex.Matches(prompt, @" VAR ([A-Z]{5}) = (VAR ([A-Z]{5})|(\d+))\."))
                {
                    // Each link must come after the variable it copies.
                    if (m.Groups[4].Value == value || chain.Contains(m.Groups[3].Value))
                    {
                        chain.Add(m.Groups[1].Value);
                    }
                }
                return chain;
            default:
                var listed = Regex.Matches(prompt, @"^\d+\. ([a-z]+)$", RegexOptions.Multiline).Select(m => m.Groups[1].Value)
                    .GroupBy(w => w).Select(g => (Word: g.Key, Count: g.Count())).OrderByDescending(g => g.Count).ToList();
                Assert.True(listed[9].Count > listed[10].Count, "the ten common words must stand out");
                return listed.Take(10).Select(g => g.Word);
        }
    }

    [GeneratedRegex(@"The pass key is (\d{5})\. Remember it\. \1 is the pass key\.")]
    private static partial Regex PassKeyNeedle();

    [GeneratedRegex(@"One of the special magic numbers for (\w+) is: (\d{7})\.")]
    private static partial Regex MagicNumber();
}
