using Kascade.Core;
using Kascade.Evaluation.Tasks;
using Kascade.Runtime;
using Kascade.Runtime.Generation;

namespace Kascade.Evaluation;

/// <summary>An attention method under evaluation: the name it is reported under and its policy.</summary>
public sealed record EvalMethod(string Name, AttentionPolicy Policy);

/// <summary>What an evaluation runs: tasks × lengths × samples × methods, and optionally perplexity windows per length × method.</summary>
public sealed record EvalPlan(
    IReadOnlyList<IEvalTask> Tasks,
    IReadOnlyList<EvalMethod> Methods,
    IReadOnlyList<int> Lengths,
    int Samples,
    int Seed,
    PerplexityWindows? Perplexity = null,
    int PrefillChunk = 512)
{
    /// <summary>Samples of <paramref name="task"/> per length: the requested count, or all a task file has if fewer.</summary>
    public int SamplesOf(IEvalTask task) => Math.Min(Samples, task.Available ?? int.MaxValue);
}

/// <summary>
/// Runs an <see cref="EvalPlan"/> greedily, one prompt at a time, skipping what the <see cref="ResultStore"/> already
/// holds and recording each result as soon as it is known. Each prompt is built once and run under every method.
/// </summary>
public static class EvalRunner
{
    /// <param name="onProgress">Receives (items done, items in the plan, what runs next).</param>
    public static void Run(ModelDirectory model, EvalPlan plan, ResultStore store, Action<int, int, string>? onProgress = null)
    {
        Check(model.Config, plan);
        int total = plan.Methods.Count * (plan.Lengths.Count * plan.Tasks.Sum(plan.SamplesOf) + (plan.Perplexity is { } p ? p.Lengths.Count * p.Windows : 0));
        int done = 0;
        void Progress(string next) => onProgress?.Invoke(done, total, next);
        var generator = new Generator(model.Model, model.Tokenizer);
        foreach (int length in plan.Lengths)
        {
            foreach (var task in plan.Tasks)
            {
                for (int index = 0; index < plan.SamplesOf(task); index++)
                {
                    var pending = plan.Methods.Where(m => !store.Has((task.Name, length, m.Name, index))).ToList();
                    done += plan.Methods.Count - pending.Count;
                    if (pending.Count == 0)
                    {
                        continue;
                    }
                    var sample = task.Create(model.Tokenizer, length, index, plan.Seed);
                    int[] ids = generator.Tokenize(sample.Prompt);
                    foreach (var method in pending)
                    {
                        Progress($"{task.Name} {length} #{index} {method.Name}");
                        var options = new GenerationOptions { MaxNewTokens = sample.MaxNewTokens, Attention = method.Policy, PrefillChunk = plan.PrefillChunk };
                        GenerationResult result;
                        using (var completion = generator.Prefill(ids, options))
                        {
                            result = completion.Decode();
                        }
                        store.Add(new SampleResult(task.Name, length, method.Name, index, sample.Id, sample.Depth, ids.Length, result.GeneratedTokens, sample.Score(result.Text), result.Text, sample.Answers));
                        done++;
                    }
                }
            }
        }
        if (plan.Perplexity is { } perplexity)
        {
            foreach (int length in perplexity.Lengths)
            {
                for (int window = 0; window < perplexity.Windows; window++)
                {
                    var pending = plan.Methods.Where(m => !store.Has((m.Name, length, window))).ToList();
                    done += plan.Methods.Count - pending.Count;
                    if (pending.Count == 0)
                    {
                        continue;
                    }
                    int[] tokens = perplexity.Window(length, window);
                    foreach (var method in pending)
                    {
                        Progress($"perplexity {length} window {window} {method.Name}");
                        double nll = perplexity.NegativeLogLikelihood(model.Model, tokens, method.Policy, plan.PrefillChunk);
                        store.Add(new PerplexityResult(method.Name, length, window, perplexity.ScoredTokens, nll));
                        done++;
                    }
                }
            }
        }
        Progress("done");
    }

    /// <summary>Refuses a plan the model cannot run (before any result directory is touched).</summary>
    public static void Check(ModelConfig config, EvalPlan plan)
    {
        if (plan.Lengths.Concat(plan.Perplexity?.Lengths ?? []).FirstOrDefault(l => l > config.MaxPositions) is > 0 and int tooLong)
        {
            throw new KascadeException($"length {tooLong} exceeds the model's context of {config.MaxPositions} tokens");
        }
    }
}
