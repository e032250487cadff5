using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Kascade.Core;

namespace Kascade.Cli;

/// <summary>One timing row of a peer script: an implementation at a context (and, for the Top-k, a row count).</summary>
public sealed record PeerRow(string Implementation, int Context, double Milliseconds, int Rows = 0);

/// <summary>
/// PyTorch's timings of the same shapes in the same run as ours (DESIGN §7, issue 15 §5's "one command per table"):
/// <c>bench/peers</c>' scripts run as child processes after our kernels have released the GPU, their tables are
/// printed after ours, and a closing table sets our time beside the faster PyTorch SDPA backend's per context (and
/// our Top-k beside torch.topk's on the same rows).
/// </summary>
public static class PeerBenchmarks
{
    /// <summary>
    /// Runs <paramref name="script"/> with <paramref name="python"/> and returns its standard output; a script that
    /// is missing, a Python that cannot start, a failure or a run past <paramref name="timeout"/> is one error naming it.
    /// </summary>
    public static string Run(string python, string script, IReadOnlyList<string> arguments, TimeSpan timeout)
    {
        if (!File.Exists(script))
        {
            throw new KascadeException($"--peers: {script} not found (run from the repository root, or give --peers-dir)");
        }
        var start = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(script);
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new KascadeException($"--peers: '{python}' did not start");
        }
        catch (Win32Exception e)
        {
            throw new KascadeException($"--peers: cannot run '{python}': {e.Message}");
        }
        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                throw new KascadeException($"--peers: {Path.GetFileName(script)} ran past {timeout.TotalSeconds:F0} s and was stopped");
            }
            if (process.ExitCode != 0)
            {
                string last = error.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "no message";
                throw new KascadeException($"--peers: {Path.GetFileName(script)} failed (exit {process.ExitCode}): {last}");
            }
            return output.Result;
        }
    }

    /// <summary>
    /// The timed rows of <c>sdpa_peer.py</c> (<c>| implementation | phase | batch | context | ms | throughput |</c>) and
    /// <c>topk_peer.py</c> (<c>| implementation | rows | context | k | ms |</c>); headers and untimed rows (<c>n/a</c>) are skipped.
    /// </summary>
    public static IReadOnlyList<PeerRow> Parse(string output)
    {
        var rows = new List<PeerRow>();
        foreach (string line in output.Split('\n'))
        {
            var cells = line.Trim().Trim('|').Split('|').Select(c => c.Trim()).ToArray();
            if (!line.TrimStart().StartsWith('|') || cells.Length < 5)
            {
                continue;
            }
            bool sdpa = cells.Length == 6;
            if (int.TryParse(cells[sdpa ? 3 : 2], CultureInfo.InvariantCulture, out int context)
                && double.TryParse(cells[4], CultureInfo.InvariantCulture, out double ms)
                && int.TryParse(cells[sdpa ? 2 : 1], CultureInfo.InvariantCulture, out int count))
            {
                rows.Add(new PeerRow(cells[0], context, ms, sdpa ? 0 : count));
            }
        }
        return rows;
    }

    /// <summary>
    /// Our time per context (<paramref name="ours"/>: what it is and its ms) against the faster PyTorch SDPA backend's
    /// in <paramref name="peers"/>: a Markdown table with the speedup (SDPA ms / ours). Contexts PyTorch did not time
    /// show a dash.
    /// </summary>
    public static string Comparison(IEnumerable<(int Context, string What, double Milliseconds)> ours, IReadOnlyList<PeerRow> peers)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| context | ours | ms | faster PyTorch SDPA | ms | speedup |");
        sb.AppendLine("|---:|---|---:|---|---:|---:|");
        foreach (var (context, what, ms) in ours)
        {
            var best = peers.Where(p => p.Context == context && p.Rows == 0 && p.Implementation.StartsWith("pytorch sdpa", StringComparison.Ordinal))
                .OrderBy(p => p.Milliseconds).FirstOrDefault();
            sb.AppendLine(best is null
                ? string.Create(CultureInfo.InvariantCulture, $"| {context} | {what} | {ms:F4} | — | — | — |")
                : string.Create(CultureInfo.InvariantCulture, $"| {context} | {what} | {ms:F4} | {best.Implementation} | {best.Milliseconds:F4} | {best.Milliseconds / ms:F2}× |"));
        }
        return sb.ToString();
    }

    /// <summary>Our Top-k per context and row count against torch.topk's on as many rows of that context: time and ratio (ours / torch).</summary>
    public static string TopKComparison(IEnumerable<(int Context, int Rows, double Milliseconds)> ours, IReadOnlyList<PeerRow> peers)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| context | rows | our Top-k ms | torch.topk ms | ours / torch.topk |");
        sb.AppendLine("|---:|---:|---:|---:|---:|");
        foreach (var (context, rows, ms) in ours)
        {
            var torch = peers.FirstOrDefault(p => p.Context == context && p.Rows == rows && p.Implementation == "torch.topk");
            sb.AppendLine(torch is null
                ? string.Create(CultureInfo.InvariantCulture, $"| {context} | {rows} | {ms:F4} | — | — |")
                : string.Create(CultureInfo.InvariantCulture, $"| {context} | {rows} | {ms:F4} | {torch.Milliseconds:F4} | {ms / torch.Milliseconds:F2}× |"));
        }
        return sb.ToString();
    }
}
