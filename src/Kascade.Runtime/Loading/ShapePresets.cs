using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// Configurations of well-known models for random-weight runs (no checkpoint can be downloaded here), by name, or
/// any <c>config.json</c> file.
/// </summary>
public static class ShapePresets
{
    /// <summary>meta-llama/Llama-3.1-8B's config.json (architecture fields only).</summary>
    private const string Llama31_8B = """
        {
          "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
          "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
          "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16", "hidden_act": "silu"
        }
        """;

    public static IReadOnlyList<string> Names => ["llama-3.1-8b"];

    /// <summary>The preset <paramref name="nameOrPath"/>, or the config.json at that path (a file or a model directory).</summary>
    public static ModelConfig Load(string nameOrPath)
    {
        if (nameOrPath == "llama-3.1-8b")
        {
            using var doc = JsonDocument.Parse(Llama31_8B);
            return ConfigLoader.Parse(doc.RootElement);
        }
        if (Directory.Exists(nameOrPath))
        {
            return ConfigLoader.Load(nameOrPath);
        }
        if (File.Exists(nameOrPath))
        {
            var (doc, root) = JsonFields.Load(nameOrPath);
            using (doc)
            {
                return ConfigLoader.Parse(root);
            }
        }
        throw new KascadeException($"'{nameOrPath}' is neither a preset ({string.Join(", ", Names)}) nor a config.json");
    }
}
