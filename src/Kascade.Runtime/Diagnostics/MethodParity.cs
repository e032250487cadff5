using Kascade.Core;
using Kascade.Runtime.Kascade;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// Every attention method a backend runs, end to end on one model: a pass-key prompt of about 1,500 tokens (long
/// enough that a 10% budget keeps fewer keys than dense), prefill then greedy decode through the sampling path (the
/// recorded decode step on the GPU where the method allows it), the tokens compared with the reference backend's.
/// </summary>
public static class MethodParity
{
    /// <summary>Greedy tokens compared per method.</summary>
    public const int Tokens = 8;

    /// <summary>
    /// Mismatched greedy tokens per method the candidate runs (allowed: none). A method the candidate's device does not
    /// run, or a Kascade variant without the model directory's <c>kascade-schedule.json</c>, is listed as not run.
    /// </summary>
    public static IReadOnlyList<ParityResult> Run(ModelDirectory reference, ModelDirectory candidate)
    {
        // The pass-key prompt of the long-context literature: a repeated filler with the key in the middle.
        const string filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
        string text = string.Concat(Enumerable.Repeat(filler, 40)) + " The pass key is 68012. Remember it. 68012 is the pass key."
            + string.Concat(Enumerable.Repeat(filler, 40)) + "\n\nWhat is the pass key? The pass key is";
        var ids = reference.Tokenizer.Encode(text);
        // A model of a shorter context keeps the prompt's end (the key may then fall outside: the tokens still compare).
        int room = reference.Config.MaxPositions - Tokens;
        ids = ids.Length > room ? ids[^room..] : ids;
        string schedulePath = Path.Combine(candidate.Path, "kascade-schedule.json");
        // Read once, and only if a method the candidate runs needs it.
        var schedule = new Lazy<KascadeSchedule?>(() => File.Exists(schedulePath) ? ScheduleFile.Load(schedulePath, candidate.Config) : null);
        var results = new List<ParityResult>();
        foreach (var method in AttentionMethods.All)
        {
            string? notRun = !candidate.Model.Backend.Runs(method.Method) ? $"{candidate.Model.Backend.Name} does not run it"
                : method.NeedsSchedule && schedule.Value is null ? "the model directory has no kascade-schedule.json" : null;
            if (notRun is not null)
            {
                results.Add(ParityResult.Skipped("method greedy", method.Name, notRun));
                continue;
            }
            var policy = new AttentionPolicy(method.Method, method.NeedsSchedule ? schedule.Value : null);
            results.Add(Compare(reference, candidate, ids, policy, method.Name));
            if (method.Method == AttentionMethod.Kascade)
            {
                // Kept selections (issue 16 §4): decode steps alternate between two recorded variants.
                results.Add(Compare(reference, candidate, ids, policy with { AnchorRefresh = 3 }, $"{method.Name} --anchor-refresh 3"));
            }
        }
        return results;
    }

    private static ParityResult Compare(ModelDirectory reference, ModelDirectory candidate, int[] ids, AttentionPolicy policy, string name)
    {
        var expected = Greedy(reference, ids, policy);
        var actual = Greedy(candidate, ids, policy);
        return new ParityResult("method greedy", $"{name}, {ids.Length} tokens", expected.Zip(actual).Count(p => p.First != p.Second), 0);
    }

    private static int[] Greedy(ModelDirectory model, int[] ids, AttentionPolicy policy)
    {
        using var session = model.Model.CreateSession(ids.Length + Tokens, policy: policy);
        var greedy = new SamplingOptions();
        var tokens = new int[Tokens];
        tokens[0] = session.Prefill(ids, greedy);
        for (int i = 1; i < Tokens; i++)
        {
            tokens[i] = session.Decode(greedy);
        }
        return tokens;
    }
}
