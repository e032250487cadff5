using ScottPlot;

namespace Kascade.Evaluation;

/// <summary>The look the evaluation's plots share (EvalReport's accuracy-TASK.png, Frontier's frontier.png): a line per method, scores on 0–100.</summary>
internal static class ScorePlots
{
    /// <summary>A plot with a line per series (its points in the order given), in Category10's colours (Category20's past ten series).</summary>
    public static Plot Lines(IEnumerable<(string Name, double[] X, double[] Y)> series, int markerSize)
    {
        var plot = new Plot();
        var all = series.ToList();
        IPalette palette = all.Count > 10 ? new ScottPlot.Palettes.Category20() : new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var (name, x, y) in all)
        {
            var line = plot.Add.Scatter(x, y);
            line.LegendText = name;
            line.Color = palette.GetColor(i++);
            line.LineWidth = 2;
            line.MarkerSize = markerSize;
        }
        return plot;
    }

    /// <summary>
    /// Titles a score plot (y from 0 to 100 with a margin), puts the legend lower left (or, <paramref name="legendOutside"/>,
    /// right of the data, where it hides no point) and writes a PNG 900 pixels wide (1100 with the legend outside), 560 high.
    /// </summary>
    public static void Save(Plot plot, string title, string xLabel, string yLabel, string path, bool legendOutside = false)
    {
        plot.Axes.SetLimitsY(-3, 103);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (legendOutside)
        {
            plot.ShowLegend(Edge.Right);
        }
        else
        {
            plot.ShowLegend(Alignment.LowerLeft);
        }
        plot.SavePng(path, legendOutside ? 1100 : 900, 560);
    }
}
