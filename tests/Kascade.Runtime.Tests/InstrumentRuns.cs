using Kascade.Core;
using Kascade.Cpu;
using Kascade.Testing;

namespace Kascade.Runtime.Tests;

/// <summary>
/// The instrument model on its own CPU backend, haystack prompts, and a prefill + greedy-decode run that returns
/// every step's logits. One instance per test class: a backend holds per-session state (rotary tables), and xunit
/// runs test classes in parallel.
/// </summary>
internal sealed class InstrumentRuns
{
    public Lazy<ModelDirectory> Directory { get; } = new(() => ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend()));

    /// <summary>The first <paramref name="tokens"/> tokens of three haystack essays.</summary>
    public int[] Prompt(int tokens)
    {
        var text = string.Concat(System.IO.Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "tests", "data", "haystack")).Order().Take(3).Select(File.ReadAllText));
        return Directory.Value.Tokenizer.Encode(text)[..tokens];
    }

    /// <summary>Prefill logits then <paramref name="decodeSteps"/> greedy steps' logits, concatenated (<c>[1 + steps, vocab]</c>).</summary>
    public float[] Run(int[] ids, AttentionPolicy policy, int chunk, int decodeSteps)
    {
        var config = Directory.Value.Config;
        using var session = Directory.Value.Model.CreateSession(ids.Length + decodeSteps, chunk, policy);
        var logits = new float[config.VocabSize];
        session.Prefill(ids, logits);
        var all = new List<float>(logits);
        for (int i = 0; i < decodeSteps; i++)
        {
            session.Forward([System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits)], logits);
            all.AddRange(logits);
        }
        return [.. all];
    }
}
