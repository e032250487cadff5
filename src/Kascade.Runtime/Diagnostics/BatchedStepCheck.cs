using System.Text.Json;
using Kascade.Core;
using Kascade.Runtime.Attention;
using Kascade.Runtime.Loading;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// A batch's decode steps as <c>bench methods --batch</c> runs them (<see cref="DecodeStepAttention"/>: every layer's
/// attention under a policy, each step recorded and replayed where the backend records) against the reference running
/// the same cycle: dense, Kascade (2 anchors of 4 layers at 10%, selecting every step, and keeping the selection for 4
/// steps) and every baseline with batched decode (selecting from layer 1 on, so that omnikv and lessismore reuse their
/// selection in later layers), a batch of 5 sequences in a cache longer than the keys. The candidate runs two cycles,
/// so the second replays the recorded steps (on the GPU: CUDA graphs of the batched kernels); the last layer's output
/// is compared.
/// </summary>
public static class BatchedStepCheck
{
    private const int Batch = 5, Length = 1500, Capacity = 1800;

    private const string Op = "batched decode step (recorded, replayed)";

    /// <summary>Four layers, 16 query and 4 KV heads of 128.</summary>
    private const string Config = """
        {
          "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 4096, "num_hidden_layers": 4,
          "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 4096,
          "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "torch_dtype": "bfloat16", "hidden_act": "silu"
        }
        """;

    public static IReadOnlyList<ParityResult> Run(IBatchedDecode reference, IBatchedDecode candidate)
    {
        using var doc = JsonDocument.Parse(Config);
        var config = ConfigLoader.Parse(doc.RootElement);
        var rng = new Random(11);
        int kvWidth = config.KvHeads * config.HeadDim, width = config.Heads * config.HeadDim;
        // bf16-exact keys and values, fp32 queries, as BackendParity's cases.
        var keys = Enumerable.Range(0, Batch).Select(_ => BackendParity.Bf16(BackendParity.Random(rng, Length * kvWidth, 1))).ToArray();
        var values = Enumerable.Range(0, Batch).Select(_ => BackendParity.Bf16(BackendParity.Random(rng, Length * kvWidth, 1))).ToArray();
        var queries = BackendParity.Random(rng, Batch * width, 2);
        var kascade = new AttentionPolicy(AttentionMethod.Kascade, KascadeSchedule.Spread(config, 2, 10), 10);
        var fromLayer1 = new BaselineOptions { QuestDenseLayers = 1, SparCasDenseLayers = 1, OmniKvFilterLayers = [1], LessIsMoreSelectionLayers = [1] };
        var baselines = AttentionMethods.All.Where(m => m.Method is not (AttentionMethod.Dense or AttentionMethod.OracleTopK) && !m.NeedsSchedule)
            .Select(m => (new AttentionPolicy(m.Method, null, 10) { Baselines = fromLayer1 }, $"{m.Name}, 10%"));
        var results = new List<ParityResult>();
        foreach (var (policy, name) in new[] { (AttentionPolicy.Dense, "dense"), (kascade, "kascade, 2 anchors, 10%"), (kascade with { AnchorRefresh = 4 }, "kascade, 2 anchors, 10%, refresh 4") }.Concat(baselines))
        {
            string shape = $"{name}, batch {Batch}, {Length} of {Capacity} keys";
            if (!AttentionOps.RunsBatched((IBackend)candidate, policy, config, Batch))
            {
                results.Add(ParityResult.Skipped(Op, shape, "the candidate does not run this method batched at this shape"));
                continue;
            }
            float[] Cycle(IBatchedDecode backend, int cycles)
            {
                var b = (IBackend)backend;
                using var cache = b.AllocateKvCache(new KvCacheShape(Batch, config.KvHeads, config.HeadDim, Capacity));
                for (int s = 0; s < Batch; s++)
                {
                    using var k = b.Upload(keys[s], Length, kvWidth);
                    using var v = b.Upload(values[s], Length, kvWidth);
                    b.AppendKv(cache, s, 0, k, v);
                }
                using var q = b.Upload(queries, Batch, width);
                using var output = b.Allocate(Batch, width);
                using (var step = new DecodeStepAttention(b, policy, config, cache, Length, q, output, Batch))
                {
                    for (int i = 0; i < cycles; i++)
                    {
                        step.RunCycle();
                    }
                }
                var result = new float[Batch * width];
                b.Read(output, result);
                return result;
            }
            var expected = Cycle(reference, 1);
            var actual = Cycle(candidate, 2);
            // Attention on tensor cores rounds queries and probabilities to bf16: the dense kernels' bound.
            results.Add(BackendParity.CompareValues(Op, shape, expected, actual, BackendParity.TensorCoreBound));
        }
        return results;
    }
}
