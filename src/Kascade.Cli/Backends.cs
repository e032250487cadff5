using Kascade.Core;
using Kascade.Cpu;
using Kascade.Cuda;

namespace Kascade.Cli;

/// <summary>Turns <c>--device</c> into a backend: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
internal static class Backends
{
    public const string Description = "Where to run: cpu, cuda or cuda:N";

    public static IBackend Create(string device, int? threads) => device switch
    {
        "cpu" => new CpuBackend(threads),
        "cuda" => new CudaBackend(),
        _ when device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device[5..], out int n) && n >= 0 => new CudaBackend(n),
        _ => throw new KascadeException($"unknown device '{device}'; use cpu, cuda or cuda:N"),
    };
}
