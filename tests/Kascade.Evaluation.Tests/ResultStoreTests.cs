using Kascade.Core;
using Kascade.Testing;
using Xunit;

namespace Kascade.Evaluation.Tests;

/// <summary>The results directory: what was written is found again, a cut-off last line is dropped, different runs are not mixed.</summary>
public class ResultStoreTests
{
    private static readonly Dictionary<string, string> Identity = new() { ["model"] = "m 1", ["seed"] = "1", ["method dense"] = "Dense" };

    private static SampleResult Result(int index, double score, string method = "dense") =>
        new("passkey", 2048, method, index, $"passkey-2048-{index}", 0.05 * index, 2000 + index, 8, score, $" {index}. \"quoted\"\nline", ["123"]);

    [Fact]
    public void Results_survive_reopening_exactly()
    {
        using var dir = new TempDirectory();
        var store = ResultStore.Open(dir.Path, Identity);
        store.Add(Result(0, 1));
        store.Add(Result(1, 0.5));
        store.Add(new PerplexityResult("dense", 8192, 0, 256, 812.25));
        var again = ResultStore.Open(dir.Path, Identity);
        Assert.Equal(store.Samples.OrderBy(s => s.Index).Select(Describe), again.Samples.OrderBy(s => s.Index).Select(Describe));
        Assert.True(again.Has(("passkey", 2048, "dense", 1)));
        Assert.False(again.Has(("passkey", 2048, "dense", 2)));
        Assert.Equal(812.25, Assert.Single(again.Perplexity).NegativeLogLikelihood);
        Assert.True(again.Has(("dense", 8192, 0)));
    }

    private static string Describe(SampleResult r) => $"{r.Key} {r.Id} {r.Depth} {r.PromptTokens} {r.GeneratedTokens} {r.Score} {r.Output} {string.Join('|', r.Answers)}";

    [Fact]
    public void A_line_cut_off_by_an_interruption_is_dropped_and_the_run_goes_on()
    {
        using var dir = new TempDirectory();
        var store = ResultStore.Open(dir.Path, Identity);
        store.Add(Result(0, 1));
        File.AppendAllText(Path.Combine(dir.Path, ResultStore.SamplesFile), "{\"task\": \"passkey\", \"len");
        var again = ResultStore.Open(dir.Path, Identity);
        Assert.Single(again.Samples);
        again.Add(Result(1, 0));
        Assert.Equal(2, ResultStore.Open(dir.Path, Identity).Samples.Count);
    }

    [Fact]
    public void A_damaged_line_in_the_middle_is_named()
    {
        using var dir = new TempDirectory();
        var store = ResultStore.Open(dir.Path, Identity);
        store.Add(Result(0, 1));
        string path = Path.Combine(dir.Path, ResultStore.SamplesFile);
        File.WriteAllText(path, "garbage\n" + File.ReadAllText(path));
        Assert.Contains($"{ResultStore.SamplesFile}:1:", Assert.Throws<KascadeException>(() => ResultStore.Open(dir.Path, Identity)).Message);
    }

    [Fact]
    public void A_different_run_is_refused_but_keys_only_one_side_names_are_merged()
    {
        using var dir = new TempDirectory();
        ResultStore.Open(dir.Path, Identity).Add(Result(0, 1));
        var e = Assert.Throws<KascadeException>(() => ResultStore.Open(dir.Path, new Dictionary<string, string>(Identity) { ["seed"] = "2" }));
        Assert.Contains("seed: '1' there, '2' now", e.Message);
        Assert.Throws<KascadeException>(() => ResultStore.Open(dir.Path, new Dictionary<string, string>(Identity) { ["method dense"] = "Dense top-k 20%" }));
        // Another method alone, with perplexity this time: compatible, and merged into the run's record.
        var more = new Dictionary<string, string> { ["model"] = "m 1", ["seed"] = "1", ["method quest"] = "Quest", ["perplexity"] = "essays last 256" };
        Assert.Single(ResultStore.Open(dir.Path, more).Samples);
        Assert.Throws<KascadeException>(() => ResultStore.Open(dir.Path, new Dictionary<string, string>(Identity) { ["method quest"] = "Quest page 32" }));
        Assert.Throws<KascadeException>(() => ResultStore.Open(dir.Path, new Dictionary<string, string>(Identity) { ["perplexity"] = "essays last 64" }));
    }
}
