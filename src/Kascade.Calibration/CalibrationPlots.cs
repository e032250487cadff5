using ScottPlot;

namespace Kascade.Calibration;

/// <summary>PNG plots of a calibration: the layer-similarity matrix S, the layer importance w and the DP's curve over anchor counts.</summary>
public static class CalibrationPlots
{
    public static void SimilarityHeatmap(double[][] similarity, IReadOnlyList<int> anchors, string path)
    {
        int n = similarity.Length;
        var data = new double[n, n];
        for (int a = 0; a < n; a++)
        {
            for (int b = 0; b < n; b++)
            {
                data[a, b] = b >= a ? similarity[a][b] : double.NaN;
            }
        }
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(data);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.FlipVertically = true;
        plot.Add.ColorBar(heatmap);
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.Title($"Kascade layer similarity S[a][b] (anchors {string.Join(", ", anchors)})");
        plot.XLabel("target layer b");
        plot.YLabel("source layer a");
        plot.SavePng(path, 900, 800);
    }

    public static void Importance(double[] importance, IReadOnlyList<int> anchors, string path)
    {
        var plot = new Plot();
        var bars = plot.Add.Bars(importance);
        for (int i = 0; i < bars.Bars.Count; i++)
        {
            bars.Bars[i].FillColor = anchors.Contains(i) ? Colors.OrangeRed : Colors.SteelBlue;
        }
        plot.Title("Layer importance w = 1 − mean cos(x, x + attention(x)); anchors in red");
        plot.XLabel("layer");
        plot.YLabel("w");
        plot.Axes.Margins(bottom: 0);
        plot.SavePng(path, 900, 450);
    }

    /// <summary>
    /// The DP for every anchor count: its score (the DP objective's value, left axis: Σ weighted similarity covered, or
    /// Σ weighted log similarity under the log objective) and the similarity of its
    /// weakest covered layer (right axis), the written count marked and, for <c>--anchors auto</c>, the target.
    /// </summary>
    public static void AnchorCurve(IReadOnlyList<Kascade.Core.AnchorChoice> choices, int written, double? target, string path)
    {
        var plot = new Plot();
        double[] counts = [.. choices.Select(c => (double)c.AnchorCount)];
        var score = plot.Add.Scatter(counts, [.. choices.Select(c => c.Score)]);
        score.LegendText = "DP score";
        var weakest = plot.Add.Scatter(counts, [.. choices.Select(c => c.WeakestSimilarity ?? double.NaN)]);
        weakest.LegendText = "weakest covered S";
        weakest.Axes.YAxis = plot.Axes.Right;
        var line = plot.Add.VerticalLine(written);
        line.LegendText = $"written: {written} anchors";
        if (target is { } t)
        {
            var h = plot.Add.HorizontalLine(t);
            h.Axes.YAxis = plot.Axes.Right;
            h.LegendText = $"target S = {t}";
        }
        plot.Title("Kascade anchors: DP score and weakest covered layer by anchor count");
        plot.XLabel("anchors (layer 0 included)");
        plot.YLabel("DP score");
        plot.Axes.Right.Label.Text = "weakest covered S";
        plot.ShowLegend(Alignment.MiddleRight);
        plot.SavePng(path, 900, 500);
    }
}
