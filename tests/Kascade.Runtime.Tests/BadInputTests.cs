using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Generation;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>Each user mistake gets a <see cref="KascadeException"/> whose message names the problem.</summary>
public class BadInputTests
{
    private static string CopyTiny(TempDirectory dir, string variant = "qwen2-bias")
    {
        foreach (var f in Directory.GetFiles(TestPaths.TinyModel(variant)))
        {
            File.Copy(f, dir.File(Path.GetFileName(f)));
        }
        File.Copy(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"), dir.File("tokenizer.json"));
        return dir.Path;
    }

    private static void Fails(string expectedFragment, Action action)
    {
        var e = Assert.Throws<KascadeException>(action);
        Assert.Contains(expectedFragment, e.Message);
    }

    private static void Open(string path)
    {
        using var m = ModelDirectory.Open(path, new CpuBackend());
    }

    [Fact]
    public void A_tiny_copy_opens()
    {
        using var dir = new TempDirectory();
        Open(CopyTiny(dir));
    }

    [Fact]
    public void Missing_directory() => Fails("model directory not found", () => Open("/nonexistent/model"));

    [Fact]
    public void Missing_config()
    {
        using var dir = new TempDirectory();
        File.Delete(Path.Combine(CopyTiny(dir), "config.json"));
        Fails("config.json not found", () => Open(dir.Path));
    }

    [Fact]
    public void Missing_weights()
    {
        using var dir = new TempDirectory();
        File.Delete(Path.Combine(CopyTiny(dir), "model.safetensors"));
        Fails("expected model.safetensors", () => Open(dir.Path));
    }

    [Fact]
    public void Missing_shard_named_by_the_index()
    {
        using var dir = new TempDirectory();
        CopyTiny(dir, "llama3-rope-untied");
        File.Delete(dir.File("model-00003-of-00005.safetensors"));
        Fails("model-00003-of-00005.safetensors", () => Open(dir.Path));
    }

    [Fact]
    public void Missing_tokenizer()
    {
        using var dir = new TempDirectory();
        File.Delete(Path.Combine(CopyTiny(dir), "tokenizer.json"));
        Fails("no tokenizer", () => Open(dir.Path));
    }

    [Fact]
    public void Truncated_file_shorter_than_its_header()
    {
        using var dir = new TempDirectory();
        string f = Path.Combine(CopyTiny(dir), "model.safetensors");
        using (var s = File.OpenWrite(f))
        {
            s.SetLength(100);
        }
        Fails("corrupt safetensors header", () => Open(dir.Path));
    }

    [Fact]
    public void Truncated_data()
    {
        using var dir = new TempDirectory();
        string f = Path.Combine(CopyTiny(dir), "model.safetensors");
        using (var s = File.OpenWrite(f))
        {
            s.SetLength(s.Length - 1000);
        }
        Fails("(truncated?)", () => Open(dir.Path));
    }

    [Fact]
    public void Header_that_is_not_json()
    {
        using var dir = new TempDirectory();
        string f = Path.Combine(CopyTiny(dir), "model.safetensors");
        var bytes = File.ReadAllBytes(f);
        bytes[8] = (byte)'#';
        File.WriteAllBytes(f, bytes);
        Fails("model.safetensors: the safetensors header is not valid JSON", () => Open(dir.Path));
    }

    [Fact]
    public void Tensor_with_the_wrong_shape()
    {
        using var dir = new TempDirectory();
        CopyTiny(dir);
        Rewrite(dir.File("config.json"), "\"intermediate_size\": 96", "\"intermediate_size\": 128");
        Fails("mlp.gate_proj.weight' has shape [96, 64]; the config implies [128, 64]", () => Open(dir.Path));
    }

    [Fact]
    public void Tensor_with_a_dtype_the_format_does_not_define()
    {
        using var dir = new TempDirectory();
        SafeTensorsWriter.WriteBf16(dir.File("model.safetensors"), [("x", [2], [1f, 2f])]);
        ReplaceInFile(dir.File("model.safetensors"), "\"BF16\"", "\"BF17\"");
        Fails("'x.dtype' is 'BF17', which is not a safetensors dtype", () => SafeTensorsFile.Open(dir.File("model.safetensors")).Dispose());
    }

    [Fact]
    public void Tensor_of_a_dtype_the_model_cannot_use()
    {
        using var dir = new TempDirectory();
        CopyTiny(dir);
        // I16 has BF16's size, so the layout stays valid and only the dtype is wrong.
        ReplaceInFile(dir.File("model.safetensors"), "\"BF16\"", "\"I16\" ");
        Fails("is I16; supported: BF16, F16, F32", () => Open(dir.Path));
    }

    [Fact]
    public void Unsupported_architecture_is_named()
    {
        using var dir = new TempDirectory();
        CopyTiny(dir);
        Rewrite(dir.File("config.json"), "Qwen2ForCausalLM", "GPTNeoXForCausalLM");
        Fails("unsupported architecture 'GPTNeoXForCausalLM'", () => Open(dir.Path));
    }

    [Fact]
    public void Unsupported_rope_scaling_is_named()
    {
        using var dir = new TempDirectory();
        CopyTiny(dir);
        Rewrite(dir.File("config.json"), "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
        Fails("rope scaling type 'yarn'", () => Open(dir.Path));
    }

    [Fact]
    public void Empty_prompt_and_prompt_beyond_context()
    {
        using var dir = new TempDirectory();
        using var m = ModelDirectory.Open(CopyTiny(dir), new CpuBackend());
        var gen = new Generator(m.Model, m.Tokenizer);
        Fails("the prompt is empty", () => gen.Generate("", new GenerationOptions()));
        string longPrompt = string.Concat(Enumerable.Repeat("the pass key is 12345. ", 200));
        Fails("the model's context is 512", () => gen.Generate(longPrompt, new GenerationOptions()));
    }

    private static void ReplaceInFile(string path, string from, string to)
    {
        var text = System.Text.Encoding.Latin1.GetString(File.ReadAllBytes(path));
        Assert.Contains(from, text);
        File.WriteAllBytes(path, System.Text.Encoding.Latin1.GetBytes(text.Replace(from, to)));
    }

    private static void Rewrite(string path, string from, string to)
    {
        string text = File.ReadAllText(path);
        Assert.Contains(from, text);
        File.WriteAllText(path, text.Replace(from, to));
    }
}
