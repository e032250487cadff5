using System.Text;
using System.Text.Json;
using Kascade.Core;

namespace Kascade.Testing;

/// <summary>The shape of a random-weight Llama-family model written for shape-grid tests.</summary>
public sealed record RandomModelShape(
    int HeadDim,
    int Heads,
    int KvHeads,
    int Layers = 2,
    int Hidden = 64,
    int Intermediate = 96,
    int Vocab = 128,
    string Architecture = "LlamaForCausalLM",
    bool Tied = true,
    int MaxPositions = 4096,
    bool AttentionBias = false);

/// <summary>Writes <c>config.json</c> + <c>model.safetensors</c> (bf16, seeded) for a <see cref="RandomModelShape"/>.</summary>
public static class RandomModel
{
    public static void Write(string directory, RandomModelShape s, int seed = 1)
    {
        var rng = new Random(seed);
        var tensors = new List<(string Name, int[] Shape, float[] Data)>();
        void Add(string name, float scale, float offset, params int[] shape)
        {
            var data = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = offset + scale * (float)(rng.NextDouble() * 2 - 1);
            }
            tensors.Add((name, shape, data));
        }
        int q = s.Heads * s.HeadDim, kv = s.KvHeads * s.HeadDim;
        bool bias = s.Architecture == "Qwen2ForCausalLM" || s.AttentionBias, qkNorm = s.Architecture == "Qwen3ForCausalLM";
        bool outputBias = s.AttentionBias && s.Architecture != "Qwen2ForCausalLM";
        Add("model.embed_tokens.weight", 1f, 0, s.Vocab, s.Hidden);
        Add("model.norm.weight", 0.2f, 1, s.Hidden);
        if (!s.Tied)
        {
            Add("lm_head.weight", 0.2f, 0, s.Vocab, s.Hidden);
        }
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 0.2f, 1, s.Hidden);
            Add(p + "post_attention_layernorm.weight", 0.2f, 1, s.Hidden);
            Add(p + "self_attn.q_proj.weight", 0.3f, 0, q, s.Hidden);
            Add(p + "self_attn.k_proj.weight", 0.3f, 0, kv, s.Hidden);
            Add(p + "self_attn.v_proj.weight", 0.3f, 0, kv, s.Hidden);
            Add(p + "self_attn.o_proj.weight", 0.2f, 0, s.Hidden, q);
            if (bias)
            {
                Add(p + "self_attn.q_proj.bias", 0.2f, 0, q);
                Add(p + "self_attn.k_proj.bias", 0.2f, 0, kv);
                Add(p + "self_attn.v_proj.bias", 0.2f, 0, kv);
            }
            if (outputBias)
            {
                Add(p + "self_attn.o_proj.bias", 0.2f, 0, s.Hidden);
            }
            if (qkNorm)
            {
                Add(p + "self_attn.q_norm.weight", 0.2f, 1, s.HeadDim);
                Add(p + "self_attn.k_norm.weight", 0.2f, 1, s.HeadDim);
            }
            Add(p + "mlp.gate_proj.weight", 0.3f, 0, s.Intermediate, s.Hidden);
            Add(p + "mlp.up_proj.weight", 0.3f, 0, s.Intermediate, s.Hidden);
            Add(p + "mlp.down_proj.weight", 0.2f, 0, s.Hidden, s.Intermediate);
        }
        Directory.CreateDirectory(directory);
        SafeTensorsWriter.WriteBf16(Path.Combine(directory, "model.safetensors"), tensors);
        var config = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { s.Architecture },
            ["hidden_size"] = s.Hidden,
            ["intermediate_size"] = s.Intermediate,
            ["num_hidden_layers"] = s.Layers,
            ["num_attention_heads"] = s.Heads,
            ["num_key_value_heads"] = s.KvHeads,
            ["head_dim"] = s.HeadDim,
            ["vocab_size"] = s.Vocab,
            ["max_position_embeddings"] = s.MaxPositions,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 10000.0,
            ["tie_word_embeddings"] = s.Tied,
            ["attention_bias"] = s.AttentionBias,
            ["eos_token_id"] = 0,
            ["torch_dtype"] = "bfloat16",
        };
        File.WriteAllText(Path.Combine(directory, "config.json"), JsonSerializer.Serialize(config));
    }
}

/// <summary>A minimal safetensors writer for test models (bf16, round-to-nearest-even), and raw files for hostile headers.</summary>
public static class SafeTensorsWriter
{
    /// <summary>The bytes of a file with exactly <paramref name="header"/> (any text, not checked) and <paramref name="dataBytes"/> bytes of data.</summary>
    public static byte[] Raw(string header, int dataBytes) => Raw(Encoding.UTF8.GetBytes(header), dataBytes);

    public static byte[] Raw(byte[] header, int dataBytes)
    {
        var bytes = new byte[8 + header.Length + dataBytes];
        BitConverter.TryWriteBytes(bytes, (long)header.Length);
        header.CopyTo(bytes, 8);
        return bytes;
    }

    public static void WriteBf16(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, shape, data) in tensors)
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = "BF16", ["shape"] = shape, ["data_offsets"] = new[] { offset, offset + data.Length * 2L } };
            offset += data.Length * 2L;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        using var f = File.Create(path);
        using var w = new BinaryWriter(f);
        w.Write((long)padded);
        w.Write(json);
        for (int i = json.Length; i < padded; i++)
        {
            w.Write((byte)' ');
        }
        foreach (var (_, _, data) in tensors)
        {
            foreach (var v in data)
            {
                w.Write(DTypes.SingleToBf16(v));
            }
        }
    }
}
