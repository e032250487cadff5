using System.CommandLine;
using Kascade.Core;
using Kascade.Evaluation;

namespace Kascade.Cli;

public static partial class CliApp
{
    /// <summary><c>kascade frontier</c>: issue 16 §3's accuracy–speed table and plot from eval directories and bench methods JSON files.</summary>
    private static Command FrontierCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOption();
        var evals = new Option<string>("--evals") { Description = "Directory of kascade eval result directories, one per method and setting (bench/frontier/run-evals.sh)", Required = true };
        var speeds = new Option<string>("--speeds") { Description = "Directory of bench methods --json files (bench/frontier/run-speed.sh)", Required = true };
        var context = OptionRules.Lengths("--context", "The context whose decode attention speedup the summary and the plot use", [131072]);
        var batch = new Option<int>("--batch") { Description = "The decode batch (a bench methods --batch timing) whose speedup the summary and the plot use", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var output = new Option<string>("--out") { Description = "Directory for frontier.md and frontier.png", Required = true }.WritableDirectory();
        var command = new Command("frontier", "Kascade's accuracy-speed frontier: every method and setting's scores (kascade eval) against its decode attention speedup over dense (bench methods), a table and a plot.")
        {
            model, evals, speeds, context, batch, output,
        };
        command.SetAction(parse =>
        {
            var config = Runtime.Loading.ConfigLoader.Load(Runtime.Loading.ModelLocation.Resolve(parse.GetValue(model)!));
            var at = new SpeedAt(parse.GetValue(context)![0], parse.GetValue(batch));
            var points = Frontier.Load(parse.GetValue(evals)!, parse.GetValue(speeds)!, config.Layers);
            if (points.Count == 0)
            {
                throw new KascadeException($"no kascade eval results (results.json and run.json) in the directories under {parse.GetValue(evals)}");
            }
            // A summary at a speed nothing was timed at would rank nothing; with no timings at all the scores stand alone.
            var timed = points.SelectMany(p => p.Speedup.Keys).Distinct().OrderBy(t => t.Batch).ThenBy(t => t.Context).ToList();
            if (timed.Count > 0 && !timed.Contains(at))
            {
                throw new KascadeException($"no point is timed at {at}; the files in {parse.GetValue(speeds)} time {string.Join(", ", timed)} (--context, --batch)");
            }
            if (timed.Count == 0)
            {
                stderr.WriteLine($"warning: no bench methods --json row in {parse.GetValue(speeds)} times an evaluated method: the table has scores only");
            }
            string outDir = parse.GetValue(output)!;
            Directory.CreateDirectory(outDir);
            string table = Frontier.ToMarkdown(points, at);
            string md = Path.Combine(outDir, "frontier.md");
            File.WriteAllText(md, table);
            var files = new List<string> { md };
            try
            {
                string png = Path.Combine(outDir, "frontier.png");
                Frontier.Plot(points, at, png);
                files.Add(png);
            }
            catch (Exception e) when (e.GetBaseException() is DllNotFoundException)
            {
                stderr.WriteLine("warning: plot not written: SkiaSharp's native library (libSkiaSharp) is missing beside the kascade binary");
            }
            stdout.Write(table);
            stderr.WriteLine($"wrote {string.Join(", ", files)}");
        });
        return command;
    }
}
