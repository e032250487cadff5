using System.Text.Json;
using Kascade.Core;
using Kascade.Runtime.Loading;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// Decoding through <see cref="InferenceSession.Decode"/> — on the GPU a recorded CUDA graph replayed with the token,
/// position and draw read on the device, and sampling on the device — against the same backend run op by op through
/// <see cref="InferenceSession.Forward"/> with the <see cref="Sampling"/> rule applied to the logits on the host. A small
/// random model decodes 300 tokens after a 700-token prompt, across the context lengths where the attention launch
/// plan changes (so the step is recorded again several times): the token sequences must be the same.
/// </summary>
public static class DecodeReplayCheck
{
    private const int Prompt = 700, Steps = 300;

    /// <summary>Two layers, 8 query and 2 KV heads of 128, a vocabulary that is not a multiple of 4.</summary>
    private const string Config = """
        {
          "architectures": ["LlamaForCausalLM"], "hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 2,
          "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4099, "max_position_embeddings": 4096,
          "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu"
        }
        """;

    public static IReadOnlyList<ParityResult> Run(IBackend backend)
    {
        using var doc = JsonDocument.Parse(Config);
        using var model = LlamaModel.Random(ConfigLoader.Parse(doc.RootElement), backend, seed: 3);
        var rng = new Random(5);
        var ids = Enumerable.Range(0, Prompt).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();
        var results = new List<ParityResult>();
        foreach (var options in new[] { new SamplingOptions(), new SamplingOptions(Temperature: 0.9f, TopP: 0.95f, TopK: 100, Seed: 9) })
        {
            using var decoded = model.CreateSession(Prompt + Steps, maxChunk: 256);
            var tokens = new List<int> { decoded.Prefill(ids, options) };
            while (tokens.Count < Steps)
            {
                tokens.Add(decoded.Decode(options));
            }
            using var forward = model.CreateSession(Prompt + Steps, maxChunk: 256);
            var logits = new float[model.Config.VocabSize];
            forward.Prefill(ids, logits);
            int mismatches = 0;
            for (int draw = 0; draw < Steps; draw++)
            {
                int expected = Sampling.Choose(logits, options, draw);
                mismatches += expected == tokens[draw] ? 0 : 1;
                if (draw + 1 < Steps)
                {
                    // Teacher-forced with the decoded tokens, so one mismatch counts once.
                    forward.Forward([tokens[draw]], logits);
                }
            }
            results.Add(new ParityResult("decode replay", $"{options.Label}, {Steps} tokens after {Prompt}", mismatches, 0));
        }
        return results;
    }
}
