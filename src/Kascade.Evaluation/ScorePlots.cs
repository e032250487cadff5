using ScottPlot;

namespace Kascade.Evaluation;

/// <summary>The look the evaluation's plots share (EvalReport's accuracy-TASK.png, Frontier's frontier.png): a line per method, scores on 0–100.</summary>
internal static class ScorePlots
{
    /// <summary>A plot with a line per series (its points in the order given), in Category10's colours.</summary>
    public static Plot Lines(IEnumerable<(string Name, double[] X, double[] Y)> series, int markerSize)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var (name, x, y) in series)
        {
            var line = plot.Add.Scatter(x, y);
            line.LegendText = name;
            line.Color = palette.GetColor(i++);
            line.LineWidth = 2;
            line.MarkerSize = markerSize;
        }
        return plot;
    }

    /// <summary>Titles a score plot (y from 0 to 100 with a margin), puts the legend lower left and writes a 900 × 560 PNG.</summary>
    public static void Save(Plot plot, string title, string xLabel, string yLabel, string path)
    {
        plot.Axes.SetLimitsY(-3, 103);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.LowerLeft);
        plot.SavePng(path, 900, 560);
    }
}
