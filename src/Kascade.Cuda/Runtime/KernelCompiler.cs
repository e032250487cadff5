using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Kascade.Cuda.Interop;

namespace Kascade.Cuda.Runtime;

/// <summary>
/// Compiles the embedded CUDA C++ sources with NVRTC for the device at first use and caches the cubin on disk,
/// under a key of every input that changes the binary: the source and its headers, the specialisation defines,
/// the options, the target architecture and the NVRTC version.
/// </summary>
public sealed class KernelCompiler
{
    private readonly string _architecture;
    private readonly string _cacheDirectory;
    private readonly (int Major, int Minor) _nvrtcVersion;

    public KernelCompiler(string architecture, string? cacheDirectory = null)
    {
        _architecture = architecture;
        _cacheDirectory = cacheDirectory ?? DefaultCacheDirectory();
        CudaCheck.ThrowIfFailed(Nvrtc.nvrtcVersion(out int major, out int minor), "nvrtcVersion");
        _nvrtcVersion = (major, minor);
    }

    /// <summary>The prefix of the kernels' embedded resource names (Kernels/*.cu, *.cuh).</summary>
    private const string ResourcePrefix = "Kascade.Cuda.Kernels.";

    /// <summary>
    /// Headers every source may include, by name: every header embedded beside the kernels, so that a new one needs no
    /// list kept by hand (a header missing from such a list failed NVRTC on the GPU only, 2026-12-06).
    /// </summary>
    public static IReadOnlyList<string> Headers { get; } = typeof(KernelCompiler).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".cuh", StringComparison.Ordinal))
        .Select(n => n[ResourcePrefix.Length..]).Order(StringComparer.Ordinal).ToArray();

    public static string DefaultCacheDirectory() =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "kascade", "kernels");

    /// <summary>The cubin of embedded source <paramref name="source"/> with <paramref name="defines"/> (the specialisation key).</summary>
    public byte[] Compile(string source, IReadOnlyDictionary<string, string> defines)
    {
        string code = ReadResource(source);
        var headers = Headers.Select(h => (Name: h, Code: ReadResource(h))).ToArray();
        var options = new List<string> { $"--gpu-architecture={_architecture}", "-std=c++17", "-default-device", "-lineinfo" };
        options.AddRange(defines.OrderBy(d => d.Key, StringComparer.Ordinal).Select(d => $"-D{d.Key}={d.Value}"));
        string key = Key(code, headers, options);
        string cached = Path.Combine(_cacheDirectory, $"{Path.GetFileNameWithoutExtension(source)}-{key}.cubin");
        if (File.Exists(cached))
        {
            return File.ReadAllBytes(cached);
        }
        byte[] cubin = Build(source, code, headers, options, key);
        try
        {
            Directory.CreateDirectory(_cacheDirectory);
            string temp = cached + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(temp, cubin);
            File.Move(temp, cached, overwrite: true);
        }
        catch (IOException)
        {
            // A read-only or full cache only costs a recompilation next time.
        }
        catch (UnauthorizedAccessException)
        {
        }
        return cubin;
    }

    private string Key(string code, (string Name, string Code)[] headers, List<string> options)
    {
        var text = new StringBuilder(code);
        foreach (var (name, c) in headers)
        {
            text.Append('\0').Append(name).Append('\0').Append(c);
        }
        text.Append('\0').AppendJoin('\u0001', options).Append('\0').Append($"nvrtc {_nvrtcVersion.Major}.{_nvrtcVersion.Minor}");
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..20];
    }

    private static byte[] Build(string source, string code, (string Name, string Code)[] headers, List<string> options, string key)
    {
        var headerSources = headers.Select(h => Marshal.StringToCoTaskMemUTF8(h.Code)).ToArray();
        var headerNames = headers.Select(h => Marshal.StringToCoTaskMemUTF8(h.Name)).ToArray();
        var optionPointers = options.Select(Marshal.StringToCoTaskMemUTF8).ToArray();
        var sourcesHandle = GCHandle.Alloc(headerSources, GCHandleType.Pinned);
        var namesHandle = GCHandle.Alloc(headerNames, GCHandleType.Pinned);
        nint program = 0;
        try
        {
            CudaCheck.ThrowIfFailed(Nvrtc.nvrtcCreateProgram(out program, code, source, headers.Length, sourcesHandle.AddrOfPinnedObject(), namesHandle.AddrOfPinnedObject()), "nvrtcCreateProgram");
            var result = Nvrtc.nvrtcCompileProgram(program, optionPointers.Length, optionPointers);
            if (result != NvrtcResult.Success)
            {
                Nvrtc.nvrtcGetProgramLogSize(program, out nuint logSize);
                var log = new byte[(int)logSize];
                Nvrtc.nvrtcGetProgramLog(program, log);
                throw new CudaException($"NVRTC could not compile {source} (key {key}, options {string.Join(' ', options)}):\n{Encoding.UTF8.GetString(log).TrimEnd('\0')}", isBug: true);
            }
            CudaCheck.ThrowIfFailed(Nvrtc.nvrtcGetCUBINSize(program, out nuint size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            CudaCheck.ThrowIfFailed(Nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN");
            return cubin;
        }
        finally
        {
            if (program != 0)
            {
                Nvrtc.nvrtcDestroyProgram(ref program);
            }
            sourcesHandle.Free();
            namesHandle.Free();
            foreach (var p in headerSources.Concat(headerNames).Concat(optionPointers))
            {
                Marshal.FreeCoTaskMem(p);
            }
        }
    }

    private static string ReadResource(string name)
    {
        using var stream = typeof(KernelCompiler).Assembly.GetManifestResourceStream(ResourcePrefix + name)
            ?? throw new InvalidOperationException($"kernel source {name} is not embedded");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
