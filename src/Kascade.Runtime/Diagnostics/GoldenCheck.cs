using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// A model directory's <c>golden_hf.json</c> (HF transformers, bf16) replayed on any backend: token ids exact,
/// last-position logits of HF's top-10 within <see cref="LogitTolerance"/>, and the 20 greedy tokens exact.
/// </summary>
public static class GoldenCheck
{
    /// <summary>HF rounds every activation to bf16 through the whole depth; see docs/numerics.md.</summary>
    public const double LogitTolerance = 0.5;

    public static IReadOnlyList<ParityResult> Run(ModelDirectory model)
    {
        string path = Path.Combine(model.Path, "golden_hf.json");
        if (!File.Exists(path))
        {
            throw new KascadeException($"no golden_hf.json in {model.Path}");
        }
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var results = new List<ParityResult>();
        int index = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string name = $"case {index++}";
            var ids = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var ours = model.Tokenizer.Encode(c.GetProperty("text").GetString()!);
            results.Add(new ParityResult("golden ids", name, ours.SequenceEqual(ids) ? 0 : 1, 0));
            var top = c.GetProperty("last_logits_top10").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var values = c.GetProperty("last_logits_top10_values").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            var greedy = c.GetProperty("greedy_20").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            using (var session = model.Model.CreateSession(ids.Length))
            {
                var logits = new float[model.Config.VocabSize];
                session.Prefill(ids, logits);
                double worst = top.Select((t, i) => Math.Abs(logits[t] - values[i])).Max();
                results.Add(new ParityResult("golden logits", name, worst, LogitTolerance));
            }
            // Greedy through the sampling path: on the GPU that is the recorded decode step with on-device sampling.
            using var decoder = model.Model.CreateSession(ids.Length + greedy.Length);
            var greedyOptions = new SamplingOptions();
            int next = decoder.Prefill(ids, greedyOptions), mismatches = 0;
            for (int i = 0; i < greedy.Length; i++)
            {
                mismatches += next == greedy[i] ? 0 : 1;
                if (i + 1 < greedy.Length)
                {
                    next = decoder.Decode(greedyOptions);
                }
            }
            results.Add(new ParityResult("golden greedy 20", name, mismatches, 0));
        }
        return results;
    }
}
