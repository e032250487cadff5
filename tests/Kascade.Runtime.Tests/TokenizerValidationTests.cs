using System.Diagnostics;
using System.Text.Json.Nodes;
using Kascade.Core;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>tokenizer.json read with its types checked, and its regular expressions unable to hang a prompt.</summary>
public class TokenizerValidationTests
{
    private static readonly string Original = File.ReadAllText(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"));

    private static TextTokenizer Load(Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(Original)!.AsObject();
        edit(root);
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("tokenizer.json"), root.ToJsonString());
        return TextTokenizer.Load(dir.Path);
    }

    private static void Refused(string expected, Action<JsonObject> edit)
    {
        var e = Assert.Throws<KascadeException>(() => Load(edit));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("tokenizer.json", e.Message);
    }

    [Fact]
    public void Fields_of_the_wrong_type_are_named()
    {
        Refused("'model' must be an object, not 5", r => r["model"] = 5);
        Refused("'model.type' must be a string, not 7", r => r["model"]!["type"] = 7);
        Refused("'decoder.type' must be a string, not a list of 0", r => r["decoder"]!["type"] = new JsonArray());
        Refused("'model.vocab.the' must be an integer ≥ 0, not a string (\"x\")", r => r["model"]!["vocab"]!["the"] = "x");
        Refused("'model.merges[3]' must be a pair of strings, not a list of 1", r => r["model"]!["merges"]![3] = new JsonArray("a"));
        Refused("'added_tokens[0].id' must be an integer ≥ 0, not -4", r => r["added_tokens"]![0]!["id"] = -4);
        Refused("'pre_tokenizer.pretokenizers[0].pattern.Regex' must be a string, not 5", r => r["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = 5);
        Refused("'pre_tokenizer.pretokenizers[1].use_regex' must be true or false", r => r["pre_tokenizer"]!["pretokenizers"]![1]!["use_regex"] = "no");
    }

    [Fact]
    public void An_invalid_pattern_is_one_message() =>
        Refused("'pre_tokenizer.pretokenizers[0].pattern.Regex' is not a valid regular expression", r => r["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(unclosed");

    [Fact]
    public void A_catastrophically_backtracking_pattern_ends_in_an_error_not_a_hang()
    {
        var tokenizer = Load(r => r["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(a+)+$");
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<KascadeException>(() => tokenizer.Encode(new string('a', 33) + "!"));
        Assert.Contains("catastrophic backtracking", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
    }

    [Fact]
    public void The_unmodified_file_still_loads_and_encodes() =>
        Assert.NotEmpty(Load(_ => { }).Encode("The pass key is 71432."));
}
