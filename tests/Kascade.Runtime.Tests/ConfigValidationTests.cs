using System.Text.Json;
using System.Text.Json.Nodes;
using Kascade.Core;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>
/// config.json read with every field's type and range checked: a wrong value names the field, the file and what it
/// must be, and fields that would change the model without the loader implementing them are refused.
/// </summary>
public class ConfigValidationTests
{
    private static ModelConfig Parse(Action<JsonObject> edit, string variant = "llama3-rope-untied")
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.TinyModel(variant), "config.json")))!.AsObject();
        edit(root);
        using var doc = JsonDocument.Parse(root.ToJsonString());
        return ConfigLoader.Parse(doc.RootElement);
    }

    private static void Refused(string expected, Action<JsonObject> edit, string variant = "llama3-rope-untied")
    {
        var e = Assert.Throws<KascadeException>(() => Parse(edit, variant));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("config.json", e.Message);
    }

    public static TheoryData<string, string, string> WrongTypes => new()
    {
        { "eos_token_id", "\"2\"", "'eos_token_id' must be an integer in [0, 255], not a string (\"2\")" },
        { "eos_token_id", "3000000000", "'eos_token_id' must be an integer in [0, 255], not 3000000000" },
        { "eos_token_id", "[1, true]", "'eos_token_id[1]' must be an integer in [0, 255], not true" },
        { "bos_token_id", "{}", "'bos_token_id' must be an integer in [0, 255], not an object" },
        { "bos_token_id", "-1", "'bos_token_id' must be an integer in [0, 255], not -1" },
        { "architectures", "[5]", "'architectures[0]' must be a string, not 5" },
        { "architectures", "\"LlamaForCausalLM\"", "'architectures' must be a list" },
        { "architectures", "[]", "'architectures' is empty" },
        { "rms_norm_eps", "\"abc\"", "'rms_norm_eps' must be a finite number > 0, not a string (\"abc\")" },
        { "rms_norm_eps", "-1e-06", "'rms_norm_eps' must be a finite number > 0, not -1e-06" },
        { "rms_norm_eps", "0", "'rms_norm_eps' must be a finite number > 0, not 0" },
        { "hidden_size", "64.5", "'hidden_size' must be an integer in [1, 1048576], not 64.5" },
        { "num_hidden_layers", "\"3\"", "'num_hidden_layers' must be an integer in [1, 1048576]" },
        { "num_attention_heads", "0", "'num_attention_heads' must be an integer in [1, 1048576], not 0" },
        { "vocab_size", "1e300", "'vocab_size' must be an integer in [1, 16777216], not 1e300" },
        { "max_position_embeddings", "null", "'max_position_embeddings' is missing" },
        { "tie_word_embeddings", "\"false\"", "'tie_word_embeddings' must be true or false" },
        { "hidden_act", "1", "'hidden_act' must be a string, not 1" },
        { "head_dim", "-16", "'head_dim' must be an integer in [1, 1048576], not -16" },
        { "quantization_config", "{\"quant_method\": \"gptq\"}", "'quantization_config' is present" },
        { "partial_rotary_factor", "0.5", "'partial_rotary_factor' is 0.5; only full rotary embeddings" },
    };

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public void A_wrong_value_names_the_field_and_what_it_must_be(string field, string json, string expected) =>
        Refused(expected, root => root[field] = JsonNode.Parse(json));

    [Fact]
    public void Rope_values_are_checked_wherever_they_are_given()
    {
        Refused("'rope_parameters.rope_theta' must be a finite number > 0, not a string (\"big\")", r => r["rope_parameters"]!["rope_theta"] = "big");
        Refused("'rope_theta' must be a finite number > 0, not 0", r => r["rope_theta"] = 0);
        Refused("'rope_parameters.factor' must be a finite number > 0, not 0", r => r["rope_parameters"]!["factor"] = 0);
        Refused("high_freq_factor' 1 must be larger than low_freq_factor 1", r => r["rope_parameters"]!["high_freq_factor"] = 1.0);
        Refused("'rope_parameters.original_max_position_embeddings' must be an integer ≥ 1, not 0", r => r["rope_parameters"]!["original_max_position_embeddings"] = 0);
        Refused("rope scaling type 'dynamic' is not supported", r => r["rope_parameters"]!["rope_type"] = "dynamic");
        Refused("'rope_parameters.partial_rotary_factor' is 0.25", r => r["rope_parameters"]!["partial_rotary_factor"] = 0.25);
    }

    [Fact]
    public void Sliding_windows_shorter_than_the_context_are_refused_wherever_they_apply()
    {
        Refused("sliding_window 64 is shorter than max_position_embeddings", r => r["sliding_window"] = 64, "mistral-mqa-headdim");
        Refused("sliding_window 64 is shorter", r =>
        {
            r["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention");
            r["sliding_window"] = 64;
        }, "qwen3-qknorm");
        Refused("'layer_types' lists 2 layers; num_hidden_layers is 3", r => r["layer_types"] = new JsonArray("full_attention", "full_attention"), "qwen3-qknorm");
        Refused("layer type 'chunked_attention' of layer 1 is not supported", r => r["layer_types"] = new JsonArray("full_attention", "chunked_attention", "full_attention"), "qwen3-qknorm");
        Refused("sliding_window 64 is shorter", r =>
        {
            r.Remove("layer_types");
            r["use_sliding_window"] = true;
            r["max_window_layers"] = 1;
            r["sliding_window"] = 64;
        }, "qwen3-qknorm");
    }

    [Fact]
    public void Windows_no_layer_uses_and_nulls_where_HF_allows_them_load()
    {
        Assert.Equal(512, Parse(r => r["sliding_window"] = 64, "qwen3-qknorm").MaxPositions);   // every layer_types entry is full attention
        Assert.Equal(512, Parse(r =>
        {
            r.Remove("layer_types");
            r["use_sliding_window"] = true;
            r["max_window_layers"] = 3;
            r["sliding_window"] = 64;
        }, "qwen3-qknorm").MaxPositions);
        var c = Parse(r =>
        {
            r["num_key_value_heads"] = null;
            r["head_dim"] = null;
            r["eos_token_id"] = new JsonArray(1, 2);
            r["max_position_embeddings"] = 512.0;
        });
        Assert.Equal((c.Heads, 512), (c.KvHeads, c.MaxPositions));
        Assert.Equal([1, 2], c.EosTokenIds);
    }

    /// <summary>attention_bias as HF reads it (the forward with the biases is checked in ForwardGridTests).</summary>
    [Fact]
    public void Attention_bias_is_read_for_Qwen3_and_ignored_for_Mistral_as_HF_does()
    {
        Assert.True(Parse(r => r["attention_bias"] = true, "qwen3-qknorm").AttentionBias);
        Assert.False(Parse(r => r["attention_bias"] = true, "mistral-mqa-headdim").AttentionBias);
    }

    [Fact]
    public void A_config_that_is_not_json_or_not_utf8_is_one_message()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), "{\"architectures\": [");
        Assert.Contains("config.json is not valid JSON", Assert.Throws<KascadeException>(() => ConfigLoader.Load(dir.Path)).Message);
        File.WriteAllBytes(dir.File("config.json"), [(byte)'{', 0xC3, (byte)'}']);
        Assert.Contains("config.json is not valid UTF-8", Assert.Throws<KascadeException>(() => ConfigLoader.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), "[]");
        Assert.Contains("config.json: expected a JSON object, not a list of 0", Assert.Throws<KascadeException>(() => ConfigLoader.Load(dir.Path)).Message);
    }
}
