using System.Text;
using System.Text.Json.Nodes;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime;
using Kascade.Runtime.Tokenization;
using Kascade.Testing;

namespace Kascade.Fuzz.Tests;

/// <summary>
/// A model directory for fuzzing one of its files: every other file is a symbolic link to a tiny fixture model (and
/// the embedded model's tokenizer), so each case writes only the file under test. What loads is then run: a
/// 3-token prefill and 2 decode steps, so values that pass the loader but break the forward pass are found too.
/// </summary>
public abstract class ModelDirectoryTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _root = new();
    private readonly CpuBackend _backend = new(threads: 1);

    public abstract string Name { get; }

    public abstract byte[] Original();

    protected abstract string FileUnderTest { get; }

    public abstract byte[] Mutate(Random rng, out string what);

    /// <summary>A directory linking every file of <paramref name="model"/> but <see cref="FileUnderTest"/>, plus the tokenizer.</summary>
    protected string LinkedCopy(string model)
    {
        string dir = Directory.CreateDirectory(Path.Combine(_root.Path, Path.GetFileName(model))).FullName;
        var files = Directory.GetFiles(model).Append(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"));
        foreach (var f in files.Where(f => Path.GetFileName(f) != FileUnderTest))
        {
            File.CreateSymbolicLink(Path.Combine(dir, Path.GetFileName(f)), f);
        }
        return dir;
    }

    /// <summary>The directory the next case's file goes into.</summary>
    protected abstract string DirectoryFor(byte[] input);

    public void Load(byte[] input)
    {
        string dir = DirectoryFor(input);
        File.WriteAllBytes(Path.Combine(dir, FileUnderTest), input);
        using var model = ModelDirectory.Open(dir, _backend);
        Run(model);
    }

    /// <summary>Prefill and decode a few tokens that every tiny model's vocabulary holds.</summary>
    protected static void Run(ModelDirectory model)
    {
        int capacity = Math.Min(8, model.Config.MaxPositions);
        using var session = model.Model.CreateSession(capacity);
        int[] prompt = [.. new[] { 5, 6, 7 }.Take(Math.Max(1, capacity - 2))];
        session.Prefill(prompt, new SamplingOptions());
        while (session.Position < session.Capacity && session.Position < prompt.Length + 2)
        {
            session.Decode(new SamplingOptions(Temperature: 0.7f, TopK: 5, Seed: 1));
        }
    }

    public void Dispose()
    {
        _backend.Dispose();
        _root.Dispose();
    }
}

/// <summary>config.json of each of the five tiny fixture models (Llama 3 rope, linear rope, Mistral MQA, Qwen2, Qwen3).</summary>
public sealed class ConfigTarget : ModelDirectoryTarget
{
    private static readonly string[] Variants = ["llama3-rope-untied", "llama-linear-tied", "mistral-mqa-headdim", "qwen2-bias", "qwen3-qknorm"];
    private readonly string[] _dirs;
    private readonly string[] _seeds;
    private int _variant;

    public ConfigTarget()
    {
        _dirs = [.. Variants.Select(v => LinkedCopy(TestPaths.TinyModel(v)))];
        _seeds = [.. Variants.Select(v => File.ReadAllText(Path.Combine(TestPaths.TinyModel(v), "config.json")))];
    }

    public override string Name => "config.json";

    public override byte[] Original()
    {
        _variant = 0;
        return Encoding.UTF8.GetBytes(_seeds[0]);
    }

    protected override string FileUnderTest => "config.json";

    public override byte[] Mutate(Random rng, out string what)
    {
        _variant = rng.Next(Variants.Length);
        var bytes = JsonMutator.Mutate(_seeds[_variant], rng, out what);
        what = $"{Variants[_variant]}: {what}";
        return bytes;
    }

    protected override string DirectoryFor(byte[] input) => _dirs[_variant];
}

/// <summary>
/// The header of a single-file checkpoint: the JSON mutated structurally, and sometimes the 8-byte length field or the
/// data length as well.
/// </summary>
public sealed class SafeTensorsTarget : ModelDirectoryTarget
{
    private readonly string _dir;
    private readonly string _header;
    private readonly byte[] _data;

    public SafeTensorsTarget()
    {
        string model = TestPaths.TinyModel("llama-linear-tied");
        _dir = LinkedCopy(model);
        var file = File.ReadAllBytes(Path.Combine(model, "model.safetensors"));
        int length = (int)BitConverter.ToInt64(file);
        _header = Encoding.UTF8.GetString(file, 8, length);
        _data = file[(8 + length)..];
    }

    public override string Name => "safetensors header";

    public override byte[] Original() => [.. BitConverter.GetBytes((long)Encoding.UTF8.GetByteCount(_header)), .. Encoding.UTF8.GetBytes(_header), .. _data];

    protected override string FileUnderTest => "model.safetensors";

    public override byte[] Mutate(Random rng, out string what)
    {
        var header = JsonMutator.Mutate(_header, rng, out what);
        long declared = header.Length;
        var data = _data;
        switch (rng.Next(8))
        {
            case 0:
                long[] lengths = [0, 1, header.Length - 1, header.Length + 1, 100_000_001, long.MaxValue, -1, long.MinValue, (long)int.MaxValue + 1];
                declared = lengths[rng.Next(lengths.Length)];
                what += $"; header length field {declared}";
                break;
            case 1:
                int cut = rng.Next(data.Length + 1);
                data = data[..cut];
                what += $"; data cut to {cut} bytes";
                break;
        }
        var bytes = new byte[8 + header.Length + data.Length];
        BitConverter.TryWriteBytes(bytes, declared);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    protected override string DirectoryFor(byte[] input) => _dir;
}

/// <summary>model.safetensors.index.json of the sharded tiny model.</summary>
public sealed class IndexTarget : ModelDirectoryTarget
{
    private readonly string _dir;
    private readonly string _seed;

    public IndexTarget()
    {
        string model = TestPaths.TinyModel("llama3-rope-untied");
        _dir = LinkedCopy(model);
        _seed = File.ReadAllText(Path.Combine(model, FileUnderTest));
    }

    public override string Name => "safetensors index";

    public override byte[] Original() => Encoding.UTF8.GetBytes(_seed);

    protected override string FileUnderTest => "model.safetensors.index.json";

    public override byte[] Mutate(Random rng, out string what) => JsonMutator.Mutate(_seed, rng, out what);

    protected override string DirectoryFor(byte[] input) => _dir;
}

/// <summary>tokenizer.json (the embedded model's byte-level BPE), loaded and used to encode and decode text with special tokens.</summary>
public sealed class TokenizerTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly string _seed = File.ReadAllText(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"));

    public string Name => "tokenizer.json";

    public byte[] Original() => Encoding.UTF8.GetBytes(_seed);

    public byte[] Mutate(Random rng, out string what) => JsonMutator.Mutate(_seed, rng, out what);

    public void Load(byte[] input)
    {
        File.WriteAllBytes(_dir.File("tokenizer.json"), input);
        var tokenizer = TextTokenizer.Load(_dir.Path);
        var ids = tokenizer.Encode("The pass key is 71432.<|endoftext|> Ünïcödé text, 😀 and aaaa!!\n\tend");
        tokenizer.Decode(ids);
        var stream = tokenizer.CreateStreamingDecoder(ids);
        foreach (int id in ids)
        {
            stream.Add(id);
        }
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// A SentencePiece <c>tokenizer.model</c> (Llama 2's protobuf), damaged at the byte level: bytes flipped, ranges cut
/// out or repeated, overlong varints inserted, the file truncated; loaded and used to encode and decode.
/// </summary>
public sealed class SentencePieceTarget : IFuzzTarget, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly byte[] _seed = File.ReadAllBytes(Path.Combine(TestPaths.Tokenizers, "llama2.tokenizer.model"));

    public string Name => "tokenizer.model";

    public byte[] Original() => _seed;

    public byte[] Mutate(Random rng, out string what)
    {
        var steps = new List<string>();
        var bytes = _seed;
        for (int i = 0, n = 1 + rng.Next(3); i < n; i++)
        {
            int at = rng.Next(bytes.Length), length = 1 + rng.Next(64);
            switch (rng.Next(4))
            {
                case 0:
                    bytes = [.. bytes[..at], .. bytes[Math.Min(bytes.Length, at + length)..]];
                    steps.Add($"{length} bytes cut at {at}");
                    break;
                case 1:
                    bytes = [.. bytes[..at], .. bytes.AsSpan(at, Math.Min(length, bytes.Length - at)), .. bytes[at..]];
                    steps.Add($"{length} bytes repeated at {at}");
                    break;
                case 2:
                    bytes = [.. bytes[..at], .. Enumerable.Repeat((byte)0xFF, 9), 0x7F, .. bytes[at..]];
                    steps.Add($"an overlong varint inserted at {at}");
                    break;
                default:
                    bytes = JsonMutator.DamageBytes(bytes, rng, steps);
                    break;
            }
        }
        what = string.Join("; ", steps);
        return bytes;
    }

    public void Load(byte[] input)
    {
        File.WriteAllBytes(_dir.File("tokenizer.model"), input);
        var tokenizer = TextTokenizer.FromSentencePiece(_dir.File("tokenizer.model"));
        tokenizer.Decode(tokenizer.Encode("The pass key is 71432. Ünïcödé text, 😀 and  spaces!"));
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>A JSON object given as text, for targets that read JSON lines.</summary>
internal static class JsonLines
{
    /// <summary>A JSON line whose "prompt" is cut to <paramref name="chars"/> characters, so a case stays cheap, and whose "id" is <paramref name="id"/> when given.</summary>
    public static string Shortened(string line, int chars, string? id = null)
    {
        var node = JsonNode.Parse(line)!.AsObject();
        if (id is not null)
        {
            node["id"] = id;
        }
        if (node["prompt"]?.GetValue<string>() is { Length: > 0 } prompt && prompt.Length > chars)
        {
            node["prompt"] = prompt[..(chars / 2)] + prompt[^(chars / 2)..];
        }
        return node.ToJsonString();
    }
}
