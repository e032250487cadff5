using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>Maps a Hugging Face <c>config.json</c> onto <see cref="ModelConfig"/>, once, refusing what the forward pass does not implement.</summary>
public static class ConfigLoader
{
    private static readonly Dictionary<string, ModelArchitecture> Architectures = new(StringComparer.Ordinal)
    {
        ["LlamaForCausalLM"] = ModelArchitecture.Llama,
        ["MistralForCausalLM"] = ModelArchitecture.Mistral,
        ["Qwen2ForCausalLM"] = ModelArchitecture.Qwen2,
        ["Qwen3ForCausalLM"] = ModelArchitecture.Qwen3,
    };

    public static ModelConfig Load(string directory)
    {
        string path = Path.Combine(directory, "config.json");
        if (!File.Exists(path))
        {
            throw new KascadeException($"config.json not found in {directory}");
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new KascadeException($"config.json is not valid JSON ({e.Message})");
        }
        using (doc)
        {
            return Parse(doc.RootElement);
        }
    }

    public static ModelConfig Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new KascadeException("config.json: expected a JSON object");
        }
        string archName = root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0
            ? archs[0].GetString() ?? ""
            : throw new KascadeException("config.json: 'architectures' is missing");
        if (!Architectures.TryGetValue(archName, out var arch))
        {
            throw new KascadeException($"unsupported architecture '{archName}'; supported: {string.Join(", ", Architectures.Keys)}");
        }

        int hidden = Int(root, "hidden_size");
        int heads = Int(root, "num_attention_heads");
        int kvHeads = OptionalInt(root, "num_key_value_heads") ?? heads;
        int headDim = OptionalInt(root, "head_dim") ?? (hidden % heads == 0 ? hidden / heads : throw new KascadeException($"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads} and no head_dim is given"));
        int layers = Int(root, "num_hidden_layers");
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new KascadeException($"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        }
        string act = OptionalString(root, "hidden_act") ?? "silu";
        if (act is not ("silu" or "swish"))
        {
            throw new KascadeException($"config.json: hidden_act '{act}' is not supported (the forward implements SwiGLU with silu)");
        }
        if (OptionalBool(root, "mlp_bias") == true)
        {
            throw new KascadeException("config.json: mlp_bias = true is not supported");
        }
        int maxPositions = Int(root, "max_position_embeddings");
        CheckSlidingWindow(root, maxPositions);

        bool attentionBias = arch == ModelArchitecture.Qwen2 || OptionalBool(root, "attention_bias") == true;
        return new ModelConfig(
            arch,
            archName,
            VocabSize: Int(root, "vocab_size"),
            HiddenSize: hidden,
            IntermediateSize: Int(root, "intermediate_size"),
            Layers: layers,
            Heads: heads,
            KvHeads: kvHeads,
            HeadDim: headDim,
            MaxPositions: maxPositions,
            RmsNormEps: OptionalDouble(root, "rms_norm_eps") ?? 1e-6,
            Rope: ParseRope(root),
            TieWordEmbeddings: OptionalBool(root, "tie_word_embeddings") ?? false,
            AttentionBias: attentionBias,
            QkNorm: arch == ModelArchitecture.Qwen3,
            EosTokenIds: TokenIds(root, "eos_token_id"),
            BosTokenId: TokenIds(root, "bos_token_id") is [var bos, ..] ? bos : null,
            DType: ParseDType(OptionalString(root, "torch_dtype") ?? OptionalString(root, "dtype") ?? "bfloat16"));
    }

    /// <summary>
    /// A sliding window shorter than the context changes attention; we run full attention, so only
    /// configs whose window covers the whole context (or that turn it off) are accepted.
    /// </summary>
    private static void CheckSlidingWindow(JsonElement root, int maxPositions)
    {
        int? window = OptionalInt(root, "sliding_window");
        bool enabled = OptionalBool(root, "use_sliding_window") ?? true;
        if (enabled && window is { } w && w < maxPositions)
        {
            throw new KascadeException($"config.json: sliding_window {w} is shorter than max_position_embeddings {maxPositions}; sliding-window attention is not supported");
        }
    }

    /// <summary>Reads RoPE from transformers ≥ 5 <c>rope_parameters</c> or the older <c>rope_theta</c> + <c>rope_scaling</c>.</summary>
    private static RopeConfig ParseRope(JsonElement root)
    {
        JsonElement? scaling = null;
        double theta = OptionalDouble(root, "rope_theta") ?? 10000.0;
        if (root.TryGetProperty("rope_parameters", out var p) && p.ValueKind == JsonValueKind.Object)
        {
            theta = OptionalDouble(p, "rope_theta") ?? theta;
            scaling = p;
        }
        else if (root.TryGetProperty("rope_scaling", out var s) && s.ValueKind == JsonValueKind.Object)
        {
            scaling = s;
        }
        if (scaling is not { } sc)
        {
            return new RopeConfig(theta);
        }
        string type = OptionalString(sc, "rope_type") ?? OptionalString(sc, "type") ?? "default";
        return type switch
        {
            "default" => new RopeConfig(theta),
            "linear" => new RopeConfig(theta, RopeScalingType.Linear, Factor: Double(sc, "factor", "rope_scaling")),
            "llama3" => new RopeConfig(
                theta,
                RopeScalingType.Llama3,
                Factor: Double(sc, "factor", "rope_scaling"),
                LowFreqFactor: Double(sc, "low_freq_factor", "rope_scaling"),
                HighFreqFactor: Double(sc, "high_freq_factor", "rope_scaling"),
                OriginalMaxPositions: (int)Double(sc, "original_max_position_embeddings", "rope_scaling")),
            _ => throw new KascadeException($"config.json: rope scaling type '{type}' is not supported; supported: default, linear, llama3"),
        };
    }

    private static DType ParseDType(string name) => name switch
    {
        "bfloat16" => DType.BF16,
        "float16" => DType.F16,
        "float32" => DType.F32,
        _ => throw new KascadeException($"config.json: dtype '{name}' is not supported; supported: bfloat16, float16, float32"),
    };

    private static IReadOnlyList<int> TokenIds(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return [];
        }
        return v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(e => e.GetInt32()).ToArray() : [v.GetInt32()];
    }

    private static int Int(JsonElement root, string name) =>
        OptionalInt(root, name) is { } v && v > 0 ? v : throw new KascadeException($"config.json: '{name}' is missing or not a positive integer");

    private static double Double(JsonElement root, string name, string parent) =>
        OptionalDouble(root, name) ?? throw new KascadeException($"config.json: '{parent}.{name}' is missing");

    private static int? OptionalInt(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

    private static double? OptionalDouble(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    private static bool? OptionalBool(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    private static string? OptionalString(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
