using Kascade.Core;

namespace Kascade.Runtime;

/// <summary>
/// Decode steps recorded once per key and replayed (<see cref="IBackend.Record"/>, CUDA graphs): a session's decode
/// (keyed by its step variant, stamped with its sampling options) and <c>kascade bench methods</c>' cycles (keyed by
/// variant and position) run their steps through it, so both record, replay and re-record alike.
/// </summary>
/// <typeparam name="TKey">What tells recordings apart: steps of one key issue the same ops with the same launch plans.</typeparam>
/// <param name="record">Records the ops an action issues, or returns null where nothing records (<see cref="IBackend.Record"/>).</param>
public sealed class RecordedSteps<TKey>(Func<Action, IRecordedStep?> record) : IDisposable where TKey : notnull
{
    /// <summary>The recording per key (null: the backend does not record) and the stamp it was made with.</summary>
    private readonly Dictionary<TKey, (IRecordedStep? Step, object? Stamp)> _steps = [];

    /// <summary>
    /// Runs the step at <paramref name="position"/>: replays the recording kept for <paramref name="key"/> where it was
    /// made with an equal <paramref name="stamp"/> and fits the position (<see cref="IRecordedStep.TryReplay"/>);
    /// otherwise records <paramref name="issue"/> afresh in its place and replays that; where the backend does not
    /// record, issues it directly. Does not wait for the step.
    /// </summary>
    public void Run(TKey key, int position, Action issue, object? stamp = null)
    {
        if (_steps.TryGetValue(key, out var kept) && Equals(kept.Stamp, stamp))
        {
            if (kept.Step is null)
            {
                issue();
                return;
            }
            if (kept.Step.TryReplay(position))
            {
                return;
            }
        }
        kept.Step?.Dispose();
        _steps.Remove(key);
        var fresh = record(issue);
        _steps[key] = (fresh, stamp);
        if (fresh is null)
        {
            issue();
        }
        else if (!fresh.TryReplay(position))
        {
            throw new InvalidOperationException($"a decode step recorded at position {position} does not replay there");
        }
    }

    public void Dispose()
    {
        foreach (var (step, _) in _steps.Values)
        {
            step?.Dispose();
        }
        _steps.Clear();
    }
}
