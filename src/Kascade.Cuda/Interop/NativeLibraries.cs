using System.Reflection;
using System.Runtime.InteropServices;

namespace Kascade.Cuda.Interop;

/// <summary>
/// Finds the CUDA driver, NVRTC and cuBLASLt: <c>CUDA_PATH</c>/<c>CUDA_HOME</c>, <c>/usr/local/cuda/lib64</c>, then the
/// loader path, accepting the CUDA 13 and 12 sonames. Registered once as this assembly's import resolver.
/// </summary>
internal static class NativeLibraries
{
    public const string Driver = "kascade-cuda";
    public const string Nvrtc = "kascade-nvrtc";
    public const string CublasLt = "kascade-cublaslt";

    private static readonly Dictionary<string, string[]> Sonames = new()
    {
        [Driver] = ["libcuda.so.1", "libcuda.so"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
        [CublasLt] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
    };

    private static int _registered;

    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
        }
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!Sonames.TryGetValue(name, out var candidates))
        {
            return 0;
        }
        foreach (var dir in SearchDirectories())
        {
            foreach (var soname in candidates)
            {
                string full = Path.Combine(dir, soname);
                if (File.Exists(full) && NativeLibrary.TryLoad(full, out nint handle))
                {
                    return handle;
                }
            }
        }
        foreach (var soname in candidates)
        {
            if (NativeLibrary.TryLoad(soname, out nint handle))
            {
                return handle;
            }
        }
        return 0;
    }

    private static IEnumerable<string> SearchDirectories()
    {
        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
        {
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root)
            {
                yield return Path.Combine(root, "lib64");
                yield return Path.Combine(root, "lib");
            }
        }
        yield return "/usr/local/cuda/lib64";
        yield return "/usr/lib/x86_64-linux-gnu";
        yield return "/usr/lib";
        yield return "/usr/local/nvidia/lib64";
    }
}
