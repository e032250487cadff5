using System.Text;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>Our tokenizers against HF <c>tokenizers</c> / <c>sentencepiece</c> on tricky strings (tools/golden/make_fixtures.py).</summary>
public class TokenizerFixtureTests
{
    public static TheoryData<string> Names => new() { "instrument", "smollm2-135m", "llama2" };

    private static TextTokenizer Load(string name) => name switch
    {
        "instrument" => TextTokenizer.Load(TestPaths.InstrumentModel),
        "smollm2-135m" => TextTokenizer.FromTokenizerJson(Path.Combine(TestPaths.Tokenizers, "smollm2-135m.tokenizer.json")),
        "llama2" => TextTokenizer.FromSentencePiece(Path.Combine(TestPaths.Tokenizers, "llama2.tokenizer.model")),
        _ => throw new ArgumentException(name),
    };

    private static IEnumerable<(string Text, int[] Ids, string Decoded)> Cases(string name) =>
        Json.Load(Path.Combine(TestPaths.Fixtures, "tokenizers", name + ".json")).GetProperty("cases").EnumerateArray()
            .Select(c => (c.GetProperty("text").GetString()!, c.GetProperty("ids").Ints(), c.GetProperty("decoded").GetString()!));

    [Theory]
    [MemberData(nameof(Names))]
    public void Ids_match_the_reference_exactly(string name)
    {
        var tok = Load(name);
        var failures = new StringBuilder();
        foreach (var (text, ids, _) in Cases(name))
        {
            var ours = tok.Encode(text, addSpecialTokens: false);
            if (!ours.SequenceEqual(ids))
            {
                failures.AppendLine($"{Escape(text)}: expected [{string.Join(' ', ids)}] got [{string.Join(' ', ours)}]");
            }
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Decode_matches_the_reference_and_streams_the_same_text(string name)
    {
        var tok = Load(name);
        foreach (var (text, ids, decoded) in Cases(name))
        {
            Assert.Equal(decoded, tok.Decode(ids));
            var stream = tok.CreateStreamingDecoder();
            var streamed = string.Concat(ids.Select(stream.Add));
            Assert.Equal(tok.Decode(ids), streamed);
            Assert.DoesNotContain('\uFFFD', streamed.Where(_ => !text.Contains('\uFFFD')));
        }
    }

    [Fact]
    public void Streaming_holds_back_a_character_split_over_byte_tokens()
    {
        var tok = Load("instrument");
        var ids = tok.Encode("🇫🇷", addSpecialTokens: false);
        Assert.True(ids.Length > 1, "the flag should take several byte-level tokens");
        var stream = tok.CreateStreamingDecoder();
        var pieces = ids.Select(stream.Add).ToList();
        Assert.All(pieces, p => Assert.DoesNotContain('\uFFFD', p));
        Assert.Equal("🇫🇷", string.Concat(pieces));
    }

    [Fact]
    public void Special_tokens_in_text_become_their_ids()
    {
        var tok = Load("smollm2-135m");
        var ids = tok.Encode("<|im_start|>user", addSpecialTokens: false);
        Assert.Equal(1, ids[0]);
        Assert.Equal(tok.SpecialTokens["<|im_start|>"], ids[0]);
    }

    [Fact]
    public void SentencePiece_adds_bos_like_hf_llama_tokenizer()
    {
        var tok = Load("llama2");
        Assert.Equal(1, tok.Encode("Hello")[0]);
        Assert.NotEqual(1, tok.Encode("Hello", addSpecialTokens: false)[0]);
    }

    [Fact]
    public void Streaming_after_a_prompt_keeps_the_first_tokens_leading_space()
    {
        var tok = Load("llama2");
        var prompt = tok.Encode("Once upon a time");
        var continuation = tok.Encode("there was a cat", addSpecialTokens: false); // "▁there ▁was ▁a ▁cat"
        var stream = tok.CreateStreamingDecoder(prompt);
        Assert.Equal(" there was a cat", string.Concat(continuation.Select(stream.Add)));
    }

    private static string Escape(string s) => s.Length > 60 ? s[..60].ReplaceLineEndings("⏎") + "…" : s.ReplaceLineEndings("⏎");
}
