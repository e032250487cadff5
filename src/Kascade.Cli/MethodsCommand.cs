using System.CommandLine;
using Kascade.Core;
using Kascade.Cpu;
using Kascade.Cuda;

namespace Kascade.Cli;

public static partial class CliApp
{
    /// <summary>
    /// <c>kascade methods</c>: one line per registered attention method, its name first (scripts read the first
    /// word), then the devices it runs on, what it does and the settings it reads.
    /// </summary>
    private static Command MethodsCommand(TextWriter stdout)
    {
        var command = new Command("methods", "List the attention methods: name, devices they run on, description and settings.");
        command.SetAction(_ =>
        {
            int width = AttentionMethods.All.Max(m => m.Name.Length);
            foreach (var m in AttentionMethods.All)
            {
                string devices = string.Join(",", Devices(m.Method));
                string settings = m.Settings.Count > 0 ? $" (settings: {string.Join("; ", m.Settings)})" : "";
                stdout.WriteLine($"{m.Name.PadRight(width)}  {devices,-8}  {m.Description}{settings}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The device kinds of <c>--device</c> whose backend runs <paramref name="method"/>.</summary>
    internal static IEnumerable<string> Devices(AttentionMethod method)
    {
        if (CpuBackend.RunsMethod(method))
        {
            yield return "cpu";
        }
        if (CudaBackend.RunsMethod(method))
        {
            yield return "cuda";
        }
    }
}
