using System.Text;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>
/// The safetensors header rules of the reference implementation (huggingface/safetensors), each on a hand-made
/// header: every hostile layout is one <see cref="KascadeException"/> naming the file and the tensor, and no pointer
/// can leave the file.
/// </summary>
public class SafeTensorsValidationTests
{
    private static IReadOnlyList<SafeTensorInfo> Parse(string header, long dataLength) =>
        SafeTensorsHeader.Parse("w.safetensors", Encoding.UTF8.GetBytes(header), dataLength);

    private static void Refused(string expected, string header, long dataLength)
    {
        var e = Assert.Throws<KascadeException>(() => Parse(header, dataLength));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("w.safetensors", e.Message);
    }

    private static string Tensor(string name, string dtype, string shape, string offsets) =>
        $"\"{name}\": {{\"dtype\": \"{dtype}\", \"shape\": {shape}, \"data_offsets\": {offsets}}}";

    [Fact]
    public void A_valid_header_in_any_order_gives_each_tensor_its_span()
    {
        var tensors = Parse("{" + Tensor("b", "F32", "[2]", "[4, 12]") + ", " + Tensor("a", "BF16", "[2]", "[0, 4]") + ", \"__metadata__\": {\"format\": \"pt\"}}   ", 12);
        var a = tensors.Single(t => t.Name == "a");
        var b = tensors.Single(t => t.Name == "b");
        Assert.Equal((0L, 4L, DType.BF16), (a.DataOffset, a.ByteLength, a.DType!.Value));
        Assert.Equal((4L, 8L, DType.F32), (b.DataOffset, b.ByteLength, b.DType!.Value));
    }

    [Fact]
    public void Empty_and_scalar_tensors_are_valid()
    {
        Assert.Empty(Parse("{}", 0));
        var t = Parse("{" + Tensor("s", "F32", "[]", "[0, 4]") + ", " + Tensor("z", "F16", "[0, 5]", "[4, 4]") + "}", 4);
        Assert.Equal(2, t.Count);
    }

    [Fact]
    public void Dtypes_the_model_cannot_use_still_validate_with_their_sizes()
    {
        var t = Parse("{" + Tensor("i", "I64", "[2]", "[0, 16]") + ", " + Tensor("f", "F8_E4M3", "[3]", "[16, 19]") + "}", 19);
        Assert.All(t, x => Assert.Null(x.DType));
    }

    [Fact]
    public void Offsets_near_2_to_the_63_are_refused_not_overflowed() =>
        Refused("data offsets [9223372036854775800, 9223372036854775804]", "{" + Tensor("x", "F32", "[1]", "[9223372036854775800, 9223372036854775804]") + "}", 4);

    [Fact]
    public void Offsets_beyond_a_signed_64_bit_integer_are_refused() =>
        Refused("'x.data_offsets[1]' must be an integer ≥ 0", "{" + Tensor("x", "F32", "[1]", "[0, 18446744073709551615]") + "}", 4);

    [Fact]
    public void Overlapping_tensors_are_refused() =>
        Refused("overlaps the tensor before it", "{" + Tensor("a", "F32", "[2]", "[0, 8]") + ", " + Tensor("b", "F32", "[1]", "[4, 8]") + "}", 8);

    [Fact]
    public void A_gap_between_tensors_is_refused() =>
        Refused("leaves a gap of 4 bytes", "{" + Tensor("a", "F32", "[1]", "[0, 4]") + ", " + Tensor("b", "F32", "[1]", "[8, 12]") + "}", 12);

    [Fact]
    public void A_span_that_does_not_match_shape_times_dtype_is_refused() =>
        Refused("has shape [3] of F32 (12 bytes) but data offsets [0, 8]", "{" + Tensor("a", "F32", "[3]", "[0, 8]") + "}", 8);

    [Fact]
    public void A_shape_whose_element_count_overflows_is_refused() =>
        Refused("a shape whose size overflows", "{" + Tensor("a", "F32", "[4294967296, 4294967296]", "[0, 0]") + "}", 0);

    [Fact]
    public void A_shape_whose_byte_count_overflows_is_refused() =>
        Refused("a shape whose size overflows", "{" + Tensor("a", "F64", "[4611686018427387904]", "[0, 0]") + "}", 0);

    [Fact]
    public void Negative_and_fractional_dimensions_are_refused()
    {
        Refused("'a.shape[0]' must be an integer ≥ 0, not -1", "{" + Tensor("a", "F32", "[-1]", "[0, 0]") + "}", 0);
        Refused("'a.shape[0]' must be an integer ≥ 0, not 1.5", "{" + Tensor("a", "F32", "[1.5]", "[0, 0]") + "}", 0);
    }

    [Fact]
    public void Sub_byte_dtypes_must_end_on_a_byte() =>
        Refused("does not end on a byte boundary", "{" + Tensor("a", "F4", "[3]", "[0, 2]") + "}", 2);

    [Fact]
    public void A_tensor_named_twice_is_refused() =>
        Refused("names 'a' twice", "{" + Tensor("a", "F32", "[1]", "[0, 4]") + ", " + Tensor("a", "F32", "[1]", "[4, 8]") + "}", 8);

    [Fact]
    public void An_unknown_dtype_is_refused() =>
        Refused("'a.dtype' is 'Q4_K', which is not a safetensors dtype", "{" + Tensor("a", "Q4_K", "[1]", "[0, 4]") + "}", 4);

    [Fact]
    public void Metadata_must_map_strings_to_strings()
    {
        Refused("__metadata__ must map strings to strings", "{\"__metadata__\": {\"n\": 1}}", 0);
        Refused("__metadata__ must map strings to strings", "{\"__metadata__\": [\"x\"]}", 0);
        Assert.Empty(Parse("{\"__metadata__\": null}", 0));   // the reference's Option: no metadata
    }

    [Fact]
    public void Data_after_the_last_tensor_and_missing_data_are_refused()
    {
        Refused("cover 4 bytes of data but the file holds 8", "{" + Tensor("a", "F32", "[1]", "[0, 4]") + "}", 8);
        Refused("need 8 bytes of data but the file holds 4 after its header (truncated?)", "{" + Tensor("a", "F32", "[2]", "[0, 8]") + "}", 4);
    }

    [Fact]
    public void Entries_of_the_wrong_type_are_named()
    {
        Refused("w.safetensors: expected a JSON object, not a list of 2", "[1, 2]", 0);
        Refused("'a' must be an object, not 5", "{\"a\": 5}", 0);
        Refused("'a.shape' must be a list, not a string (\"2\")", "{\"a\": {\"dtype\": \"F32\", \"shape\": \"2\", \"data_offsets\": [0, 8]}}", 8);
        Refused("'a.data_offsets' must be [begin, end], not a list of 3", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 4);
        Refused("'a.dtype' is missing", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    }

    [Fact]
    public void A_header_that_is_not_utf8_is_refused()
    {
        var header = Encoding.UTF8.GetBytes("{\"a\u00e9\": {}}");
        header[3] = 0xFF;   // a lone continuation byte inside the key
        var e = Assert.Throws<KascadeException>(() => SafeTensorsHeader.Parse("w.safetensors", header, 0));
        Assert.Contains("w.safetensors: the safetensors header is not valid UTF-8 text", e.Message);
    }

    [Fact]
    public void File_level_lengths_are_checked_before_anything_is_mapped()
    {
        using var dir = new TempDirectory();
        string f = dir.File("model.safetensors");
        void Fails(string expected, byte[] bytes)
        {
            File.WriteAllBytes(f, bytes);
            Assert.Contains(expected, Assert.Throws<KascadeException>(() => SafeTensorsFile.Open(f).Dispose()).Message);
        }
        Fails("too short for a header", [1, 2, 3]);
        var huge = SafeTensorsWriter.Raw("{}", 0);
        BitConverter.TryWriteBytes(huge, long.MaxValue - 3);
        Fails("declares 9223372036854775804 header bytes; the format allows at most 100000000", huge);
        var past = SafeTensorsWriter.Raw("{}", 0);
        BitConverter.TryWriteBytes(past, 4096L);
        Fails("declares 4096 header bytes in a 10-byte file", past);
        var negative = SafeTensorsWriter.Raw("{}", 0);
        BitConverter.TryWriteBytes(negative, -2L);
        Fails("declares 18446744073709551614 header bytes", negative);
    }

    [Fact]
    public void A_valid_file_maps_each_tensor_inside_it()
    {
        using var dir = new TempDirectory();
        string f = dir.File("model.safetensors");
        SafeTensorsWriter.WriteBf16(f, [("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [4], [7, 8, 9, 10])]);
        using var file = SafeTensorsFile.Open(f);
        long length = new FileInfo(f).Length;
        Assert.All(file.Tensors.Values, t => Assert.InRange(t.DataOffset + t.ByteLength, 8, length));
        Assert.Equal(length, file.Tensors.Values.Max(t => t.DataOffset + t.ByteLength));
    }

    [Fact]
    public void A_tensor_the_index_puts_in_the_wrong_shard_is_refused()
    {
        using var dir = new TempDirectory();
        CopyModel(TestPaths.TinyModel("llama3-rope-untied"), dir.Path);
        string index = File.ReadAllText(dir.File("model.safetensors.index.json"));
        File.WriteAllText(dir.File("model.safetensors.index.json"), index.Replace("\"lm_head.weight\": \"model-00005-of-00005.safetensors\"", "\"lm_head.weight\": \"model-00001-of-00005.safetensors\"", StringComparison.Ordinal));
        Assert.NotEqual(index, File.ReadAllText(dir.File("model.safetensors.index.json")));
        var e = Assert.Throws<KascadeException>(() => WeightStore.Open(dir.Path).Dispose());
        Assert.Contains("puts tensor 'lm_head.weight' in model-00001-of-00005.safetensors", e.Message);
    }

    [Fact]
    public void An_index_cannot_point_outside_the_model_directory()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("model.safetensors.index.json"), "{\"weight_map\": {\"a\": \"../../etc/passwd\"}}");
        var e = Assert.Throws<KascadeException>(() => WeightStore.Open(dir.Path).Dispose());
        Assert.Contains("names '../../etc/passwd', which is not a file name in the model directory", e.Message);
    }

    [Fact]
    public void A_config_with_fewer_layers_than_the_checkpoint_is_refused()
    {
        using var dir = new TempDirectory();
        CopyModel(TestPaths.TinyModel("llama-linear-tied"), dir.Path);
        File.Copy(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"), dir.File("tokenizer.json"));
        var config = File.ReadAllText(dir.File("config.json"));
        int layers = ConfigLoader.Load(dir.Path).Layers;
        File.WriteAllText(dir.File("config.json"), config.Replace($"\"num_hidden_layers\": {layers}", $"\"num_hidden_layers\": {layers - 1}", StringComparison.Ordinal));
        var e = Assert.Throws<KascadeException>(() => ModelDirectory.Open(dir.Path, new CpuBackend()).Dispose());
        Assert.Contains($"num_hidden_layers = {layers - 1}, but the checkpoint holds layers up to {layers - 1}", e.Message);
    }

    [Fact]
    public void A_hub_cache_snapshot_of_symbolic_links_opens_by_path_entry_and_id()
    {
        using var cache = new TempDirectory();
        string entry = Path.Combine(cache.Path, "models--kascade--tiny");
        string blobs = Directory.CreateDirectory(Path.Combine(entry, "blobs")).FullName;
        string snapshot = Directory.CreateDirectory(Path.Combine(entry, "snapshots", "0123abcd")).FullName;
        Directory.CreateDirectory(Path.Combine(entry, "refs"));
        File.WriteAllText(Path.Combine(entry, "refs", "main"), "0123abcd");
        var files = Directory.GetFiles(TestPaths.TinyModel("llama3-rope-untied")).Append(Path.Combine(TestPaths.InstrumentModel, "tokenizer.json"));
        foreach (var (source, i) in files.Select((f, i) => (f, i)))
        {
            // As huggingface_hub lays a snapshot out: each file a relative link to a content-addressed blob.
            string blob = Path.Combine(blobs, $"blob{i:D2}");
            File.Copy(source, blob);
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(source)), Path.Combine("..", "..", "blobs", $"blob{i:D2}"));
        }
        Assert.True(new FileInfo(Path.Combine(snapshot, "config.json")).LinkTarget is not null);
        var expected = LastLogits(TestPaths.TinyModel("llama3-rope-untied"));
        foreach (string name in new[] { snapshot, entry })
        {
            Assert.Equal(expected, LastLogits(name));
            ModelDirectory.Open(name, new CpuBackend()).Dispose();
        }
        Assert.Equal(snapshot, ModelLocation.Resolve("kascade/tiny", cache.Path));
        var missing = Assert.Throws<KascadeException>(() => ModelLocation.Resolve("kascade/absent", cache.Path));
        Assert.Contains("has no models--kascade--absent", missing.Message);
    }

    /// <summary>The logits after a fixed 4-token prompt, from config.json and the weights alone.</summary>
    private static float[] LastLogits(string path)
    {
        path = ModelLocation.Resolve(path);
        var config = ConfigLoader.Load(path);
        using var weights = WeightStore.Open(path);
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(config, weights, backend);
        using var session = model.CreateSession(8);
        var logits = new float[config.VocabSize];
        session.Prefill([1, 2, 3, 4], logits);
        return logits;
    }

    private static void CopyModel(string from, string to)
    {
        foreach (var f in Directory.GetFiles(from))
        {
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        }
    }
}
