using System.Text.Json;
using Kascade.Cpu;
using Kascade.Runtime.Generation;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>The CPU forward against HF transformers: the instrument model's golden file and tiny random models per architecture variant.</summary>
public class ModelFixtureTests
{
    private static readonly Lazy<ModelDirectory> Instrument = new(() => ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend()));

    public static TheoryData<int> GoldenCases => new() { 0, 1, 2 };

    public static TheoryData<string> TinyVariants => new() { "llama3-rope-untied", "llama-linear-tied", "mistral-mqa-headdim", "qwen2-bias", "qwen3-qknorm" };

    private static JsonElement Golden(int index) =>
        Json.Load(Path.Combine(TestPaths.InstrumentModel, "golden_hf.json")).GetProperty("cases")[index];

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Instrument_token_ids_match_hf(int index)
    {
        var g = Golden(index);
        Assert.Equal(g.GetProperty("ids").Ints(), Instrument.Value.Tokenizer.Encode(g.GetProperty("text").GetString()!));
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Instrument_logits_match_hf_bf16_within_tolerance(int index)
    {
        var g = Golden(index);
        var ids = g.GetProperty("ids").Ints();
        var logits = LastLogits(ids);
        var top = g.GetProperty("last_logits_top10").Ints();
        var topValues = g.GetProperty("last_logits_top10_values").Floats();
        for (int i = 0; i < top.Length; i++)
        {
            Assert.True(Math.Abs(logits[top[i]] - topValues[i]) <= Tolerances.InstrumentBf16Logits,
                $"logit of token {top[i]}: ours {logits[top[i]]}, HF bf16 {topValues[i]}");
        }
        // Our top-10, in order, must be HF's up to swaps between tokens that are near-tied in our own logits.
        var ours = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).Take(10).ToArray();
        for (int i = 0; i < 10; i++)
        {
            Assert.True(ours[i] == top[i] || Math.Abs(logits[ours[i]] - logits[top[i]]) <= Tolerances.NearTie,
                $"rank {i}: ours {ours[i]} (logit {logits[ours[i]]}), HF {top[i]} (our logit {logits[top[i]]}, HF {topValues[i]})");
        }
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Instrument_greedy_20_tokens_match_hf(int index)
    {
        var g = Golden(index);
        var generated = new List<int>();
        var config = Instrument.Value.Config;
        using var session = Instrument.Value.Model.CreateSession(64);
        var logits = new float[config.VocabSize];
        session.Forward(g.GetProperty("ids").Ints(), logits);
        for (int i = 0; i < 20; i++)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            generated.Add(next);
            session.Forward([next], logits);
        }
        Assert.Equal(g.GetProperty("greedy_20").Ints(), generated);
    }

    [Fact]
    public void Instrument_fp32_logits_match_hf_fp32_including_a_chunked_1500_token_prompt()
    {
        var cases = Json.Load(Path.Combine(TestPaths.Fixtures, "instrument_fp32.json")).GetProperty("cases");
        foreach (var c in cases.EnumerateArray())
        {
            var ids = c.GetProperty("ids").Ints();
            Compare.Close(c.GetProperty("last_logits").Floats(), LastLogits(ids), Tolerances.InstrumentFp32Logits, 0, $"{ids.Length}-token prompt");
        }
    }

    [Theory]
    [MemberData(nameof(TinyVariants))]
    public void Tiny_model_logits_match_hf_fp32(string variant)
    {
        var fixture = Json.Load(Path.Combine(TestPaths.TinyModel(variant), "fixture.json"));
        var ids = fixture.GetProperty("ids").Ints();
        var expected = fixture.GetProperty("logits").EnumerateArray().SelectMany(r => r.Floats()).ToArray();
        Compare.Close(expected, AllLogits(TestPaths.TinyModel(variant), ids), Tolerances.TinyModelLogits, Tolerances.TinyModelLogits, variant);
    }

    [Theory]
    [MemberData(nameof(TinyVariants))]
    public void Tiny_model_greedy_tokens_match_hf(string variant)
    {
        var fixture = Json.Load(Path.Combine(TestPaths.TinyModel(variant), "fixture.json"));
        var config = ConfigLoader.Load(TestPaths.TinyModel(variant));
        using var store = WeightStore.Open(TestPaths.TinyModel(variant));
        using var model = LlamaModel.Load(config, store, new CpuBackend());
        using var session = model.CreateSession(64);
        var logits = new float[config.VocabSize];
        session.Forward(fixture.GetProperty("ids").Ints(), logits);
        var generated = new List<int>();
        for (int i = 0; i < 8; i++)
        {
            generated.Add(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits));
            session.Forward([generated[^1]], logits);
        }
        Assert.Equal(fixture.GetProperty("greedy_8").Ints(), generated);
    }

    [Fact]
    public void Legacy_rope_scaling_fields_load_the_same_model()
    {
        // Llama 3.1 checkpoints written before transformers 5 use rope_theta + rope_scaling instead of rope_parameters.
        using var dir = new TempDirectory();
        string src = TestPaths.TinyModel("llama3-rope-untied");
        foreach (var f in Directory.GetFiles(src))
        {
            File.Copy(f, dir.File(Path.GetFileName(f)));
        }
        string json = File.ReadAllText(dir.File("config.json"));
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        var rope = node["rope_parameters"]!.AsObject();
        node.Remove("rope_parameters");
        node["rope_theta"] = rope["rope_theta"]!.GetValue<double>();
        rope.Remove("rope_theta");
        rope["rope_type"] = "llama3";
        node["rope_scaling"] = rope;
        File.WriteAllText(dir.File("config.json"), node.ToJsonString());
        var expected = ConfigLoader.Load(src);
        Assert.Equal(expected, ConfigLoader.Load(dir.Path) with { EosTokenIds = expected.EosTokenIds });
    }

    [Fact]
    public void Chunked_prefill_and_decode_match_one_pass()
    {
        var ids = Golden(2).GetProperty("ids").Ints();
        var whole = LastLogits(ids);
        using var session = Instrument.Value.Model.CreateSession(64, maxChunk: 5);
        var logits = new float[Instrument.Value.Config.VocabSize];
        for (int start = 0; start < ids.Length - 1; start += 5)
        {
            session.Forward(ids.AsSpan(start, Math.Min(5, ids.Length - 1 - start)), logits);
        }
        session.Forward(ids.AsSpan(ids.Length - 1), logits);
        Compare.Close(whole, logits, Tolerances.KernelAbsolute * 10, Tolerances.KernelRelative, "chunked vs whole");
    }

    [Fact]
    public void Generator_streams_the_text_it_returns_and_honours_stop_strings()
    {
        var gen = new Generator(Instrument.Value.Model, Instrument.Value.Tokenizer);
        var streamed = new System.Text.StringBuilder();
        var full = gen.Generate("Once upon a time, in a quiet village by the sea,", new GenerationOptions { MaxNewTokens = 20 }, s => streamed.Append(s));
        Assert.Equal(full.Text, streamed.ToString());
        Assert.Equal(20, full.GeneratedTokens);
        Assert.Equal(Instrument.Value.Tokenizer.Decode(Golden(0).GetProperty("greedy_20").Ints()), full.Text);

        string stop = full.Text.Substring(10, 6);
        streamed.Clear();
        var cut = gen.Generate("Once upon a time, in a quiet village by the sea,", new GenerationOptions { MaxNewTokens = 20, Stop = [stop] }, s => streamed.Append(s));
        Assert.Equal(StopReason.StopString, cut.StopReason);
        Assert.Equal(full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal(cut.Text, streamed.ToString());
    }

    private static float[] LastLogits(int[] ids)
    {
        using var session = Instrument.Value.Model.CreateSession(ids.Length);
        var logits = new float[Instrument.Value.Config.VocabSize];
        session.Prefill(ids, logits);
        return logits;
    }

    private static float[] AllLogits(string dir, int[] ids)
    {
        var config = ConfigLoader.Load(dir);
        using var store = WeightStore.Open(dir);
        using var model = LlamaModel.Load(config, store, new CpuBackend());
        using var session = model.CreateSession(ids.Length);
        return session.ForwardAll(ids);
    }
}
