using System.Runtime.InteropServices;

namespace Kascade.Cuda.Interop;

public enum NvrtcResult
{
    Success = 0,
    OutOfMemory = 1,
    CompilationFailed = 6,
}

/// <summary>NVRTC: CUDA C++ to cubin at run time (<c>libnvrtc.so.13</c> or <c>.12</c>).</summary>
internal static partial class Nvrtc
{
    static Nvrtc() => NativeLibraries.Register();

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcVersion(out int major, out int minor);

    [LibraryImport(NativeLibraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial NvrtcResult nvrtcCreateProgram(out nint program, string source, string name, int headers, nint headerSources, nint headerNames);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcCompileProgram(nint program, int optionCount, nint[] options);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcGetProgramLogSize(nint program, out nuint size);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcGetProgramLog(nint program, byte[] log);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcGetCUBINSize(nint program, out nuint size);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcGetCUBIN(nint program, byte[] cubin);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial NvrtcResult nvrtcDestroyProgram(ref nint program);

    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial nint nvrtcGetErrorString(NvrtcResult result);
}
