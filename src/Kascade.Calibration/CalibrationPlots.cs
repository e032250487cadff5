using ScottPlot;

namespace Kascade.Calibration;

/// <summary>PNG plots of a calibration: the layer-similarity matrix S and the layer importance w.</summary>
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
}
