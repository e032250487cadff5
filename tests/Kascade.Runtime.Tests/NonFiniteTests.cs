using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Diagnostics;
using Kascade.Runtime.Generation;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>NaN or infinite logits stop a run with an error, and the probe names the first layer that made them.</summary>
public class NonFiniteTests
{
    [Fact]
    public void The_sampling_rule_gives_no_token_for_a_row_with_a_NaN_or_an_infinity()
    {
        var rng = new Random(5);
        var logits = Enumerable.Range(0, 300).Select(_ => (float)rng.NextDouble()).ToArray();
        foreach (var options in new[] { new SamplingOptions(), new SamplingOptions(Temperature: 0.8f, TopP: 0.9f, TopK: 20, Seed: 3) })
        {
            Assert.NotEqual(Sampling.NonFinite, Sampling.Choose(logits, options, 0));
            foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            {
                var poisoned = (float[])logits.Clone();
                poisoned[rng.Next(poisoned.Length)] = bad;
                Assert.Equal(Sampling.NonFinite, Sampling.Choose(poisoned, options, 0));
            }
        }
    }

    /// <summary>A copy of a tiny model with every element of <paramref name="tensor"/> set to bf16 NaN.</summary>
    private static TempDirectory Poisoned(string tensor)
    {
        var dir = new TempDirectory();
        foreach (var f in Directory.GetFiles(TestPaths.TinyModel("llama-linear-tied")))
        {
            File.Copy(f, dir.File(Path.GetFileName(f)));
        }
        File.Copy(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"), dir.File("tokenizer.json"));
        long offset, bytes;
        using (var file = SafeTensorsFile.Open(dir.File("model.safetensors")))
        {
            (offset, bytes) = (file.Tensors[tensor].DataOffset, file.Tensors[tensor].ByteLength);
        }
        using var stream = new FileStream(dir.File("model.safetensors"), FileMode.Open, FileAccess.Write);
        stream.Position = offset;
        for (long i = 0; i < bytes; i += 2)
        {
            stream.Write([0xC0, 0x7F]);   // bf16 quiet NaN, little-endian
        }
        return dir;
    }

    [Theory]
    [InlineData("model.layers.1.mlp.down_proj.weight", "layer 1's MLP output, position 0")]
    [InlineData("model.layers.1.self_attn.o_proj.weight", "layer 1's attention output, position 0")]
    [InlineData("model.embed_tokens.weight", "the token embeddings, position 0")]
    [InlineData("model.norm.weight", "layer 2's MLP output, the final norm or the LM head")]
    public void Generation_stops_and_the_probe_names_the_first_layer(string tensor, string location)
    {
        using var dir = Poisoned(tensor);
        using var model = ModelDirectory.Open(dir.Path, new CpuBackend());
        var generator = new Generator(model.Model, model.Tokenizer);
        var options = new GenerationOptions { MaxNewTokens = 4 };
        int[] prompt = [5, 6, 7, 8];   // ids inside the tiny model's 256-token vocabulary
        var cheap = Assert.Throws<NonFiniteLogitsException>(() => generator.Prefill(prompt, options).Dispose());
        Assert.Contains("NaN or infinite logits at position 3", cheap.Message);
        Assert.Contains("--verbose finds the first layer", cheap.Message);
        model.Model.LocateNonFinite = true;
        var located = Assert.Throws<NonFiniteLogitsException>(() => generator.Prefill(prompt, options).Dispose());
        Assert.Contains($"they first appear in {location}", located.Message);
    }

    [Fact]
    public void Host_logits_are_checked_too()
    {
        using var dir = Poisoned("model.layers.0.mlp.up_proj.weight");
        using var model = ModelDirectory.Open(dir.Path, new CpuBackend());
        using var session = model.Model.CreateSession(16);
        var logits = new float[model.Config.VocabSize];
        Assert.Throws<NonFiniteLogitsException>(() => session.Prefill([1, 2, 3], logits));
        using var all = model.Model.CreateSession(16);
        Assert.Throws<NonFiniteLogitsException>(() => all.ForwardAll([1, 2, 3]));
    }
}
