using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// The JSON header of a safetensors file, validated as the reference implementation (huggingface/safetensors) does:
/// at most 100 MB of UTF-8 holding a JSON object; every dtype one the format defines; element counts and byte sizes by
/// checked multiplication, the byte span equal to shape × dtype size; data offsets that, sorted, start at 0, follow each
/// other without gap or overlap and end exactly at the end of the file; no tensor named twice; <c>__metadata__</c> a map
/// of strings to strings. Anything else is refused with a message naming the file and the tensor.
/// </summary>
public static class SafeTensorsHeader
{
    /// <summary>The reference's <c>MAX_HEADER_SIZE</c>.</summary>
    public const ulong MaxHeaderBytes = 100_000_000;

    /// <summary>Every dtype the format defines, with its size in bits (the sub-byte fp4/fp6 kinds pack).</summary>
    private static readonly Dictionary<string, int> DTypeBits = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 8, ["F4"] = 4, ["F6_E2M3"] = 6, ["F6_E3M2"] = 6, ["U8"] = 8, ["I8"] = 8, ["F8_E5M2"] = 8, ["F8_E4M3"] = 8,
        ["F8_E8M0"] = 8, ["I16"] = 16, ["U16"] = 16, ["F16"] = 16, ["BF16"] = 16, ["I32"] = 32, ["U32"] = 32, ["F32"] = 32,
        ["C64"] = 64, ["F64"] = 64, ["I64"] = 64, ["U64"] = 64,
    };

    /// <summary>
    /// The tensors of <paramref name="header"/> (the bytes after the 8-byte length) with offsets relative to the data,
    /// which is <paramref name="dataLength"/> bytes long.
    /// </summary>
    public static IReadOnlyList<SafeTensorInfo> Parse(string file, ReadOnlySpan<byte> header, long dataLength)
    {
        using (var doc = JsonFields.Parse(header.ToArray(), $"{file}: the safetensors header"))
        {
            _ = new JsonFields(doc.RootElement, file);   // an object, or one message saying what it is instead
            var names = new HashSet<string>(StringComparer.Ordinal);
            var tensors = new List<SafeTensorInfo>();
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (!names.Add(entry.Name))
                {
                    throw new KascadeException($"{file}: the safetensors header names '{entry.Name}' twice");
                }
                if (entry.Name == "__metadata__")
                {
                    CheckMetadata(file, entry.Value);
                    continue;
                }
                tensors.Add(Entry(file, entry));
            }
            CheckLayout(file, tensors, dataLength);
            return tensors;
        }
    }

    private static void CheckMetadata(string file, JsonElement metadata)
    {
        // The reference reads it as Option<HashMap<String, String>>: null is no metadata.
        if (metadata.ValueKind != JsonValueKind.Null && (metadata.ValueKind != JsonValueKind.Object || metadata.EnumerateObject().Any(p => p.Value.ValueKind != JsonValueKind.String)))
        {
            throw new KascadeException($"{file}: corrupt safetensors header (__metadata__ must map strings to strings)");
        }
    }

    private static SafeTensorInfo Entry(string file, JsonProperty entry)
    {
        var fields = new JsonFields(entry.Value, file, entry.Name);
        string dtypeName = fields.String("dtype");
        if (!DTypeBits.TryGetValue(dtypeName, out int bits))
        {
            throw fields.Error("dtype", $"is '{dtypeName}', which is not a safetensors dtype");
        }
        var shapeValues = fields.Array("shape");
        var shape = new long[shapeValues.Count];
        long elements = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            shape[i] = JsonFields.AsLong(shapeValues[i], JsonFields.Index(fields.Where("shape"), i), 0);
            elements = CheckedMultiply(elements, shape[i], file, entry.Name);
        }
        var offsetValues = fields.Array("data_offsets");
        if (offsetValues.Count != 2)
        {
            throw fields.Error("data_offsets", $"must be [begin, end], not a list of {offsetValues.Count}");
        }
        long begin = JsonFields.AsLong(offsetValues[0], JsonFields.Index(fields.Where("data_offsets"), 0), 0);
        long end = JsonFields.AsLong(offsetValues[1], JsonFields.Index(fields.Where("data_offsets"), 1), 0);
        long totalBits = CheckedMultiply(elements, bits, file, entry.Name);
        if (totalBits % 8 != 0)
        {
            throw new KascadeException($"{file}: tensor '{entry.Name}' of {elements} {dtypeName} elements does not end on a byte boundary");
        }
        if (end < begin || end - begin != totalBits / 8)
        {
            throw new KascadeException($"{file}: tensor '{entry.Name}' has shape [{string.Join(", ", shape)}] of {dtypeName} ({totalBits / 8} bytes) but data offsets [{begin}, {end}]");
        }
        return new SafeTensorInfo(entry.Name, dtypeName, DTypes.FromSafeTensors(dtypeName), shape, begin, end - begin);
    }

    private static long CheckedMultiply(long a, long b, string file, string tensor)
    {
        try
        {
            return checked(a * b);
        }
        catch (OverflowException)
        {
            throw new KascadeException($"{file}: tensor '{tensor}' has a shape whose size overflows");
        }
    }

    /// <summary>Sorted by offset, the tensors must tile the data exactly: no gap, no overlap, nothing after the last.</summary>
    private static void CheckLayout(string file, List<SafeTensorInfo> tensors, long dataLength)
    {
        long next = 0;
        foreach (var t in tensors.OrderBy(t => t.DataOffset).ThenBy(t => t.ByteLength))
        {
            if (t.DataOffset != next)
            {
                string problem = t.DataOffset < next ? "overlaps the tensor before it" : $"leaves a gap of {t.DataOffset - next} bytes before it";
                throw new KascadeException($"{file}: tensor '{t.Name}' at data offsets [{t.DataOffset}, {t.DataOffset + t.ByteLength}] {problem}");
            }
            next = t.DataOffset + t.ByteLength;
        }
        if (next != dataLength)
        {
            throw new KascadeException(next > dataLength
                ? $"{file}: the tensors need {next} bytes of data but the file holds {dataLength} after its header (truncated?)"
                : $"{file}: the tensors cover {next} bytes of data but the file holds {dataLength} after its header");
        }
    }
}
