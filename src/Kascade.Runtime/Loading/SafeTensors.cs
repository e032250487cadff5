using System.IO.MemoryMappedFiles;
using System.Text.Json;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafeTensorInfo(string Name, DType DType, IReadOnlyList<long> Shape, long DataOffset, long ByteLength);

/// <summary>
/// A memory-mapped <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the data. Nothing is read into managed
/// arrays; <see cref="Pointer"/> addresses a tensor's bytes in the mapping.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused as corrupt (HF's own limit is 100 MB).</summary>
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;

    private SafeTensorsFile(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, byte* basePointer, Dictionary<string, SafeTensorInfo> tensors)
    {
        Path = path;
        _file = file;
        _view = view;
        _base = basePointer;
        _tensors = tensors;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    public static SafeTensorsFile Open(string path)
    {
        string name = System.IO.Path.GetFileName(path);
        if (!File.Exists(path))
        {
            throw new KascadeException($"weights file not found: {path}");
        }
        long length = new FileInfo(path).Length;
        if (length < 8)
        {
            throw new KascadeException($"{name}: not a safetensors file ({length} bytes, too short for a header)");
        }
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            basePointer += view.PointerOffset;
            long headerLength = *(long*)basePointer;
            if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > length)
            {
                throw new KascadeException($"{name}: corrupt safetensors header (declares {headerLength} header bytes in a {length}-byte file)");
            }
            var tensors = ParseHeader(name, new ReadOnlySpan<byte>(basePointer + 8, (int)headerLength), 8 + headerLength, length);
            return new SafeTensorsFile(path, file, view, basePointer, tensors);
        }
        catch
        {
            if (view is not null)
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
            }
            file.Dispose();
            throw;
        }
    }

    private static Dictionary<string, SafeTensorInfo> ParseHeader(string name, ReadOnlySpan<byte> header, long dataStart, long fileLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException e)
        {
            throw new KascadeException($"{name}: corrupt safetensors header ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new KascadeException($"{name}: corrupt safetensors header (not a JSON object)");
            }
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    continue;
                }
                tensors[entry.Name] = ParseEntry(name, entry, dataStart, fileLength);
            }
            return tensors;
        }
    }

    private static SafeTensorInfo ParseEntry(string file, JsonProperty entry, long dataStart, long fileLength)
    {
        string where = $"{file}: tensor '{entry.Name}'";
        try
        {
            var e = entry.Value;
            string dtypeName = e.GetProperty("dtype").GetString() ?? "";
            var dtype = DTypes.FromSafeTensors(dtypeName)
                ?? throw new KascadeException($"{where} has dtype {dtypeName}; supported: BF16, F16, F32");
            var shape = e.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var offsets = e.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || dataStart + offsets[1] > fileLength)
            {
                throw new KascadeException($"{where} has data offsets [{string.Join(", ", offsets)}] outside the file (truncated?)");
            }
            long elements = shape.Aggregate(1L, (a, b) => a * b);
            long bytes = offsets[1] - offsets[0];
            if (shape.Any(d => d < 0) || elements * dtype.SizeOf() != bytes)
            {
                throw new KascadeException($"{where} has shape [{string.Join(", ", shape)}] of {dtypeName} but {bytes} bytes of data");
            }
            return new SafeTensorInfo(entry.Name, dtype, shape, dataStart + offsets[0], bytes);
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new KascadeException($"{where}: corrupt header entry ({ex.Message})");
        }
    }

    /// <summary>Address of the first byte of <paramref name="tensor"/>; valid until this file is disposed.</summary>
    public nint Pointer(SafeTensorInfo tensor) => (nint)(_base + tensor.DataOffset);

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
