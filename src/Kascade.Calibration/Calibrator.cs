using Kascade.Core;
using Kascade.Runtime;
using Kascade.Runtime.Kascade;

namespace Kascade.Calibration;

/// <summary>Options of one calibration; immutable.</summary>
/// <param name="Anchors">
/// Anchor count of the schedule written (layer 0 included; the paper uses 5 for 32 layers), or null for the fewest
/// anchors whose weakest covered layer reaches <paramref name="TargetSimilarity"/> (<see cref="AnchorSelection.Auto"/>).
/// </param>
/// <param name="MaxNewTokens">Greedy decode steps after each prompt; their rows count like prefill tiles.</param>
/// <param name="CalibrationTopK">Keys per row in each layer's own pooled Top-k (the small calibration budget).</param>
/// <param name="TopKPercent">p written into the schedule for inference.</param>
/// <param name="TargetSimilarity">The similarity every reuse layer must reach when <paramref name="Anchors"/> is null.</param>
/// <param name="Objective">What the anchor DP maximises (<see cref="AnchorObjective"/>; the paper's by default).</param>
public sealed record CalibrationOptions(int? Anchors = 5, int MaxNewTokens = 32, int CalibrationTopK = 32, double TopKPercent = 10, int PrefillChunk = 512, double TargetSimilarity = 0.9,
    AnchorObjective Objective = AnchorObjective.Weighted);

/// <summary>A calibration's outputs: the schedule and the statistics it was chosen from.</summary>
public sealed record CalibrationResult(KascadeSchedule Schedule, double[][] LayerSimilarity, double[] Importance, double[][][][] HeadSimilarity)
{
    /// <summary>
    /// The schedule of the same calibration with the DP's choice of <paramref name="anchorCount"/> anchors (its own head
    /// maps from the same head similarity): every point of an accuracy–speed frontier from one run over the dev set.
    /// </summary>
    public KascadeSchedule ScheduleFor(int anchorCount)
    {
        var choice = Schedule.Choices?.FirstOrDefault(c => c.AnchorCount == anchorCount)
            ?? throw new KascadeException($"{anchorCount} anchors: the calibration ranked 1 to {Schedule.Model.Layers} (the model's layers)");
        var anchors = choice.Anchors;
        return Schedule with { Anchors = anchors, HeadMap = HeadMaps.Build(HeadSimilarity, anchors, Schedule.Model.Layers, Schedule.Model.KvHeads) };
    }
}

/// <summary>
/// Runs a development set densely through a model, collects Kascade's similarity statistics and layer importance,
/// and chooses anchors (the DP for every anchor count) and head maps (DESIGN §3).
/// </summary>
public static class Calibrator
{
    public static CalibrationResult Run(ModelDirectory model, IReadOnlyList<DevSetExample> examples, string devSetName, CalibrationOptions options, Action<int, int>? onExample = null)
    {
        var config = model.Config;
        Check(config, options);
        if (examples.Count == 0)
        {
            throw new KascadeException("the development set has no examples");
        }
        var collector = new SimilarityCollector(config, options.CalibrationTopK);
        var logits = new float[config.VocabSize];
        for (int e = 0; e < examples.Count; e++)
        {
            var ids = model.Tokenizer.Encode(examples[e].Prompt);
            int room = config.MaxPositions - options.MaxNewTokens;
            if (ids.Length > room)
            {
                ids = ids[^room..];
            }
            using (var session = model.Model.CreateSession(ids.Length + options.MaxNewTokens, options.PrefillChunk, observer: collector))
            {
                session.Prefill(ids, logits);
                for (int step = 0; step < options.MaxNewTokens; step++)
                {
                    session.Forward([System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits)], logits);
                }
            }
            collector.FinishExample();
            onExample?.Invoke(e + 1, examples.Count);
        }

        var similarity = collector.Similarity();
        var layerSimilarity = HeadMaps.LayerSimilarity(similarity, config.Layers);
        var importance = collector.Importance();
        var weighted = AnchorSelection.Objective(layerSimilarity, importance, options.Objective);
        var choices = AnchorSelection.SolveAll(weighted, layerSimilarity);
        var chosen = (options.Anchors is { } count ? choices[count - 1] : AnchorSelection.Auto(choices, options.TargetSimilarity)).Anchors;
        var headMap = HeadMaps.Build(similarity, chosen, config.Layers, config.KvHeads);
        var schedule = new KascadeSchedule(
            ScheduleFile.Identity(config, ScheduleFile.ConfigHash(model.Path)),
            chosen,
            headMap,
            options.TopKPercent,
            TopKBudget.TileSize,
            new CalibrationProvenance(devSetName, examples.Count, options.MaxNewTokens, options.CalibrationTopK, DateTimeOffset.UtcNow, ScheduleFile.ToolVersion,
                options.Objective.Name()),
            choices,
            layerSimilarity,
            importance);
        return new CalibrationResult(schedule, layerSimilarity, importance, similarity);
    }

    /// <summary>Refuses options that cannot work on <paramref name="config"/>, before any prompt runs.</summary>
    public static void Check(ModelConfig config, CalibrationOptions options)
    {
        if (options.Anchors is < 1 || options.Anchors > config.Layers)
        {
            throw new KascadeException($"--anchors {options.Anchors} must be between 1 and the model's {config.Layers} layers");
        }
        if (options.MaxNewTokens < 0 || options.MaxNewTokens > config.MaxPositions - TopKBudget.TileSize)
        {
            throw new KascadeException($"--max-new-tokens {options.MaxNewTokens} leaves no room for a prompt in the model's context of {config.MaxPositions}");
        }
        if (!(options.TopKPercent > 0 && options.TopKPercent <= 100))
        {
            throw new KascadeException($"--topk-percent {options.TopKPercent} must be in (0, 100]");
        }
        if (!(options.TargetSimilarity > 0 && options.TargetSimilarity <= 1))
        {
            throw new KascadeException($"--target-similarity {options.TargetSimilarity} must be in (0, 1]");
        }
    }
}
