using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// Maps a Hugging Face <c>config.json</c> onto <see cref="ModelConfig"/>, once. Every field is read with its type and
/// range checked (a message names the field, the file and what it must be), and fields the forward pass does not
/// implement but that would change the model — sliding windows, unknown rope types, partial rotary embeddings,
/// quantisation — are refused instead of ignored.
/// </summary>
public static class ConfigLoader
{
    private static readonly Dictionary<string, ModelArchitecture> Architectures = new(StringComparer.Ordinal)
    {
        ["LlamaForCausalLM"] = ModelArchitecture.Llama,
        ["MistralForCausalLM"] = ModelArchitecture.Mistral,
        ["Qwen2ForCausalLM"] = ModelArchitecture.Qwen2,
        ["Qwen3ForCausalLM"] = ModelArchitecture.Qwen3,
    };

    /// <summary>transformers' default <c>max_window_layers</c> for Qwen2/Qwen3 (layers from this one on use the window).</summary>
    private const int QwenMaxWindowLayers = 28;

    /// <summary>Largest width, head count or layer count accepted: far above any Llama-family model, far below overflow.</summary>
    private const int MaxSize = 1 << 20;

    public static ModelConfig Load(string directory)
    {
        string path = Path.Combine(directory, "config.json");
        if (!File.Exists(path))
        {
            throw new KascadeException($"config.json not found in {directory}");
        }
        var (doc, root) = JsonFields.Load(path);
        using (doc)
        {
            return Parse(root);
        }
    }

    public static ModelConfig Parse(JsonElement root, string file = "config.json") => Parse(new JsonFields(root, file));

    public static ModelConfig Parse(JsonFields root)
    {
        var archs = root.Array("architectures");
        if (archs.Count == 0)
        {
            throw root.Error("architectures", "is empty");
        }
        string archName = JsonFields.AsString(archs[0], JsonFields.Index(root.Where("architectures"), 0));
        if (!Architectures.TryGetValue(archName, out var arch))
        {
            throw new KascadeException($"unsupported architecture '{archName}'; supported: {string.Join(", ", Architectures.Keys)}");
        }
        if (root.Has("quantization_config"))
        {
            throw root.Error("quantization_config", "is present; quantised checkpoints are not supported (bf16, f16 or f32 weights)");
        }

        int hidden = root.Int("hidden_size", 1, MaxSize);
        int heads = root.Int("num_attention_heads", 1, MaxSize);
        int kvHeads = root.OptionalInt("num_key_value_heads", 1, MaxSize) ?? heads;
        if (heads % kvHeads != 0)
        {
            throw new KascadeException($"{root.File}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        }
        int headDim = root.OptionalInt("head_dim", 1, MaxSize)
            ?? (hidden % heads == 0 ? hidden / heads : throw new KascadeException($"{root.File}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} and no head_dim is given"));
        if ((long)heads * headDim > MaxSize)
        {
            throw new KascadeException($"{root.File}: num_attention_heads × head_dim = {(long)heads * headDim} is too large");
        }
        int layers = root.Int("num_hidden_layers", 1, MaxSize);
        int vocab = root.Int("vocab_size", 1, 1 << 24);
        string act = root.OptionalString("hidden_act") ?? "silu";
        if (act is not ("silu" or "swish"))
        {
            throw root.Error("hidden_act", $"is '{act}'; the forward implements SwiGLU with silu");
        }
        if (root.OptionalBool("mlp_bias") == true)
        {
            throw root.Error("mlp_bias", "is true; MLP biases are not supported");
        }
        int maxPositions = root.Int("max_position_embeddings", 1, 1 << 24);
        CheckSlidingWindow(root, arch, layers, maxPositions);

        // HF's Qwen2 always biases q, k and v; Mistral has no biases whatever the config says; Llama and Qwen3 follow attention_bias.
        bool attentionBias = arch switch
        {
            ModelArchitecture.Qwen2 => true,
            ModelArchitecture.Mistral => false,
            _ => root.OptionalBool("attention_bias") ?? false,
        };
        return new ModelConfig(
            arch,
            archName,
            VocabSize: vocab,
            HiddenSize: hidden,
            IntermediateSize: root.Int("intermediate_size", 1, MaxSize * 4),
            Layers: layers,
            Heads: heads,
            KvHeads: kvHeads,
            HeadDim: headDim,
            MaxPositions: maxPositions,
            RmsNormEps: root.OptionalDouble("rms_norm_eps", above: 0) ?? 1e-6,
            Rope: ParseRope(root),
            TieWordEmbeddings: root.OptionalBool("tie_word_embeddings") ?? false,
            AttentionBias: attentionBias,
            QkNorm: arch == ModelArchitecture.Qwen3,
            EosTokenIds: TokenIds(root, "eos_token_id", vocab),
            BosTokenId: TokenIds(root, "bos_token_id", vocab) is [var bos, ..] ? bos : null,
            DType: ParseDType(root));
    }

    /// <summary>
    /// A sliding window shorter than the context changes attention; we run full attention, so a config is accepted only
    /// when no layer uses a window shorter than the context: HF's <c>layer_types</c> where given, else Qwen's
    /// <c>use_sliding_window</c> from <c>max_window_layers</c> on, else any <c>sliding_window</c> set (Mistral).
    /// </summary>
    private static void CheckSlidingWindow(JsonFields root, ModelArchitecture arch, int layers, int maxPositions)
    {
        int? window = root.OptionalInt("sliding_window", 0);
        var layerTypes = root.OptionalArray("layer_types");
        if (layerTypes.Count > 0 && layerTypes.Count != layers)
        {
            throw root.Error("layer_types", $"lists {layerTypes.Count} layers; num_hidden_layers is {layers}");
        }
        bool slidingLayers = false;
        for (int i = 0; i < layerTypes.Count; i++)
        {
            string type = JsonFields.AsString(layerTypes[i], JsonFields.Index(root.Where("layer_types"), i));
            slidingLayers |= type switch
            {
                "full_attention" => false,
                "sliding_attention" => true,
                _ => throw new KascadeException($"{root.File}: layer type '{type}' of layer {i} is not supported (full_attention, or sliding_attention with a window covering the context)"),
            };
        }
        bool? useSliding = root.OptionalBool("use_sliding_window");
        bool windowed = layerTypes.Count > 0
            ? slidingLayers
            : arch is ModelArchitecture.Qwen2 or ModelArchitecture.Qwen3
                ? useSliding == true && (root.OptionalInt("max_window_layers", 0) ?? QwenMaxWindowLayers) < layers
                : useSliding != false;
        if (windowed && window is { } w && w < maxPositions)
        {
            throw new KascadeException($"{root.File}: sliding_window {w} is shorter than max_position_embeddings {maxPositions}; sliding-window attention is not supported");
        }
        if (layerTypes.Count > 0 && slidingLayers && window is null)
        {
            throw root.Error("sliding_window", "is missing, but layer_types has sliding_attention layers");
        }
    }

    /// <summary>Reads RoPE from transformers ≥ 5 <c>rope_parameters</c> or the older <c>rope_theta</c> + <c>rope_scaling</c>.</summary>
    private static RopeConfig ParseRope(JsonFields root)
    {
        double theta = root.OptionalDouble("rope_theta", above: 0) ?? 10000.0;
        CheckFullRotary(root);
        var scaling = root.OptionalObject("rope_parameters") ?? root.OptionalObject("rope_scaling");
        if (scaling is not { } sc)
        {
            return new RopeConfig(theta);
        }
        CheckFullRotary(sc);
        theta = sc.OptionalDouble("rope_theta", above: 0) ?? theta;
        string type = sc.OptionalString("rope_type") ?? sc.OptionalString("type") ?? "default";
        switch (type)
        {
            case "default":
                return new RopeConfig(theta);
            case "linear":
                return new RopeConfig(theta, RopeScalingType.Linear, Factor: sc.Double("factor", above: 0));
            case "llama3":
                double low = sc.Double("low_freq_factor", above: 0), high = sc.Double("high_freq_factor", above: 0);
                if (high <= low)
                {
                    // The llama3 rule interpolates between the two wavelengths by (x − low) / (high − low).
                    throw new KascadeException($"{sc.File}: '{sc.Field("high_freq_factor")}' {high} must be larger than low_freq_factor {low}");
                }
                return new RopeConfig(theta, RopeScalingType.Llama3, Factor: sc.Double("factor", above: 0), LowFreqFactor: low, HighFreqFactor: high,
                    OriginalMaxPositions: sc.Int("original_max_position_embeddings", 1));
            default:
                throw new KascadeException($"{sc.File}: rope scaling type '{type}' is not supported; supported: default, linear, llama3");
        }
    }

    /// <summary>A <c>partial_rotary_factor</c> below 1 rotates only part of each head; the forward rotates all of it.</summary>
    private static void CheckFullRotary(JsonFields fields)
    {
        if (fields.OptionalDouble("partial_rotary_factor", above: 0) is { } f && f != 1.0)
        {
            throw fields.Error("partial_rotary_factor", $"is {f}; only full rotary embeddings (1.0) are supported");
        }
    }

    private static DType ParseDType(JsonFields root)
    {
        string field = root.Has("torch_dtype") ? "torch_dtype" : "dtype";
        return (root.OptionalString(field) ?? "bfloat16") switch
        {
            "bfloat16" => DType.BF16,
            "float16" => DType.F16,
            "float32" => DType.F32,
            var name => throw root.Error(field, $"is '{name}'; supported: bfloat16, float16, float32"),
        };
    }

    /// <summary>A token id or a list of them, each in the vocabulary.</summary>
    private static IReadOnlyList<int> TokenIds(JsonFields root, string name, int vocab)
    {
        if (root.Optional(name) is not { } v)
        {
            return [];
        }
        string where = root.Where(name);
        return v.ValueKind == JsonValueKind.Array
            ? JsonFields.AsArray(v, where).Select((e, i) => JsonFields.AsInt(e, JsonFields.Index(where, i), 0, vocab - 1)).ToArray()
            : [JsonFields.AsInt(v, where, 0, vocab - 1)];
    }
}
