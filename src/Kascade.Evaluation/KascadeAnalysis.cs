using System.Globalization;
using System.Text;
using Kascade.Calibration;
using Kascade.Core;
using Kascade.Runtime;
using Kascade.Runtime.Generation;

namespace Kascade.Evaluation;

/// <summary>Pass-key results of one context length: how often dense and the policy answer, and how often their greedy outputs agree.</summary>
public sealed record PassKeyAgreement(int Length, int Samples, int DenseCorrect, int PolicyCorrect, int Agree, double MeanPromptTokens);

/// <summary>The measurements of a Kascade schedule on pass-key prompts: captured attention mass per layer, and answers against dense.</summary>
public sealed record KascadeAnalysisResult(IReadOnlyDictionary<int, IReadOnlyList<LayerMass>> Mass, IReadOnlyList<PassKeyAgreement> PassKey);

/// <summary>
/// Runs pass-key prompts (needles at evenly spread depths) at several lengths: a dense pass observed by
/// <see cref="AttentionMassAnalyzer"/> (prefill plus the answer's decode steps), then greedy answers with dense
/// attention and with the policy.
/// </summary>
public static class KascadeAnalysis
{
    /// <summary>Greedy tokens generated per answer (the key and its period fit in 8).</summary>
    public const int AnswerTokens = 8;

    public static KascadeAnalysisResult Run(ModelDirectory model, Haystack haystack, AttentionPolicy policy, IReadOnlyList<int> lengths, int samples, int seed, bool measureMass = true, Action<string, int, int>? onProgress = null)
    {
        var mass = new Dictionary<int, IReadOnlyList<LayerMass>>();
        var agreement = new List<PassKeyAgreement>();
        var generator = new Generator(model.Model, model.Tokenizer);
        foreach (int length in lengths)
        {
            var analyzer = new AttentionMassAnalyzer(model.Config, policy);
            int denseCorrect = 0, policyCorrect = 0, agree = 0;
            double promptTokens = 0;
            for (int i = 0; i < samples; i++)
            {
                double depth = samples == 1 ? 0.5 : 0.05 + 0.9 * i / (samples - 1);
                var (prompt, answer) = RetrievalPrompts.PassKey(haystack, model.Tokenizer, length - AnswerTokens, depth, seed * 7919 + length + i);
                var ids = generator.Tokenize(prompt);
                promptTokens += ids.Length;
                if (measureMass)
                {
                    Observe(model, ids, analyzer);
                }
                var options = new GenerationOptions { MaxNewTokens = AnswerTokens };
                string dense = generator.Generate(prompt, options).Text;
                string sparse = generator.Generate(prompt, options with { Attention = policy }).Text;
                denseCorrect += dense.TrimStart().StartsWith(answer, StringComparison.Ordinal) ? 1 : 0;
                policyCorrect += sparse.TrimStart().StartsWith(answer, StringComparison.Ordinal) ? 1 : 0;
                agree += dense == sparse ? 1 : 0;
                onProgress?.Invoke($"{length} tokens", i + 1, samples);
            }
            if (measureMass)
            {
                mass[length] = analyzer.Results();
            }
            agreement.Add(new PassKeyAgreement(length, samples, denseCorrect, policyCorrect, agree, promptTokens / samples));
        }
        return new KascadeAnalysisResult(mass, agreement);
    }

    /// <summary>A dense prefill of <paramref name="ids"/> and <see cref="AnswerTokens"/> greedy decode steps, observed.</summary>
    private static void Observe(ModelDirectory model, int[] ids, ILayerObserver observer)
    {
        var logits = new float[model.Config.VocabSize];
        using var session = model.Model.CreateSession(ids.Length + AnswerTokens, observer: observer);
        session.Prefill(ids, logits);
        for (int i = 0; i < AnswerTokens; i++)
        {
            session.Forward([System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits)], logits);
        }
    }

    public static string ToMarkdown(KascadeAnalysisResult result, AttentionPolicy policy)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"attention: {policy.Method}, top-k {policy.TopKPercent}%, pooling {policy.Pooling}, anchors {(policy.Schedule is null ? "-" : string.Join(", ", policy.Schedule.Anchors))}");
        sb.AppendLine();
        sb.AppendLine("Pass key, greedy answers (correct = the answer starts with the key; agree = identical text to dense):");
        sb.AppendLine();
        sb.AppendLine("| length | samples | mean prompt tokens | dense correct | policy correct | agree with dense |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|");
        foreach (var a in result.PassKey)
        {
            sb.AppendLine(inv, $"| {a.Length} | {a.Samples} | {a.MeanPromptTokens:F0} | {a.DenseCorrect}/{a.Samples} | {a.PolicyCorrect}/{a.Samples} | {a.Agree}/{a.Samples} |");
        }
        if (result.Mass.Count == 0)
        {
            return sb.ToString();
        }
        sb.AppendLine();
        sb.AppendLine("Fraction of each layer's dense attention mass on the keys the policy lets it see (mean and worst over query heads × queries, prefill tiles and decode steps), next to the layer's own per-query Top-k of the same budget (oracle):");
        sb.AppendLine();
        var lengths = result.Mass.Keys.Order().ToArray();
        sb.Append("| layer | role |");
        foreach (int l in lengths)
        {
            sb.Append(inv, $" {l} mean | {l} worst | {l} oracle mean |");
        }
        sb.AppendLine();
        sb.Append("|---:|---|");
        sb.AppendLine(string.Concat(lengths.Select(_ => "---:|---:|---:|")));
        int layers = result.Mass[lengths[0]].Count;
        for (int layer = 0; layer < layers; layer++)
        {
            sb.Append(inv, $"| {layer} | {result.Mass[lengths[0]][layer].Role} |");
            foreach (int l in lengths)
            {
                var m = result.Mass[l][layer];
                sb.Append(inv, $" {Show(m.KascadeMean)} | {Show(m.KascadeWorst)} | {Show(m.OracleMean)} |");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }

    /// <summary>A mass to three decimals; "—" where it was not measured.</summary>
    private static string Show(double mass) => double.IsNaN(mass) ? "—" : mass.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
}