using System.IO.MemoryMappedFiles;
using Kascade.Core;

namespace Kascade.Runtime.Loading;

/// <summary>
/// One tensor's entry in a safetensors header. <see cref="DType"/> is null for a dtype the format knows but the
/// model cannot use (an integer buffer, fp8); <see cref="DataOffset"/> is from the start of the file.
/// </summary>
public sealed record SafeTensorInfo(string Name, string DTypeName, DType? DType, IReadOnlyList<long> Shape, long DataOffset, long ByteLength);

/// <summary>
/// A memory-mapped <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range, then the data. The header is held to the rules of the reference implementation
/// (huggingface/safetensors, <c>SafeTensors::read_metadata</c> and <c>Metadata::validate</c>) before anything is
/// mapped, so every <see cref="Pointer"/> lies inside the file. Nothing is read into managed arrays.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
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

    /// <summary>Opens and validates <paramref name="path"/>; a symbolic link (a Hugging Face cache snapshot) is followed to its target.</summary>
    public static SafeTensorsFile Open(string path)
    {
        string name = System.IO.Path.GetFileName(path);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new KascadeException($"weights file not found: {path}");
        }
        try
        {
            // The stream's length is the target's; FileInfo.Length would measure a link itself.
            long length = stream.Length;
            Span<byte> prefix = stackalloc byte[8];
            if (length < 8 || stream.ReadAtLeast(prefix, 8, throwOnEndOfStream: false) < 8)
            {
                throw new KascadeException($"{name}: not a safetensors file ({length} bytes, too short for a header)");
            }
            ulong headerLength = BitConverter.ToUInt64(prefix);
            if (headerLength > SafeTensorsHeader.MaxHeaderBytes)
            {
                throw new KascadeException($"{name}: corrupt safetensors header (declares {headerLength} header bytes; the format allows at most {SafeTensorsHeader.MaxHeaderBytes})");
            }
            if (8 + (long)headerLength > length)
            {
                throw new KascadeException($"{name}: corrupt safetensors header (declares {headerLength} header bytes in a {length}-byte file)");
            }
            var header = new byte[headerLength];
            stream.ReadExactly(header);
            long dataStart = 8 + (long)headerLength;
            var tensors = SafeTensorsHeader.Parse(name, header, length - dataStart)
                .ToDictionary(t => t.Name, t => t with { DataOffset = dataStart + t.DataOffset }, StringComparer.Ordinal);
            return Map(path, stream, tensors);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static SafeTensorsFile Map(string path, FileStream stream, Dictionary<string, SafeTensorInfo> tensors)
    {
        var file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            return new SafeTensorsFile(path, file, view, basePointer + view.PointerOffset, tensors);
        }
        catch
        {
            view?.Dispose();
            file.Dispose();
            throw;
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
