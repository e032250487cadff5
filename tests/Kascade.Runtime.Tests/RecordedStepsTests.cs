using Kascade.Core;
using Kascade.Runtime;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>
/// The record-or-replay rule a session's decode and <c>bench methods</c>' cycles share, against a fake recorder: a
/// step is recorded once per key and replayed, recorded again where its recording does not fit the position or its
/// stamp changed, and issued directly where nothing records.
/// </summary>
public class RecordedStepsTests
{
    /// <summary>A recording that replays at positions below <paramref name="fitsBelow"/>, counting its replays.</summary>
    private sealed class FakeStep(int fitsBelow) : IRecordedStep
    {
        public int Replays { get; private set; }

        public bool Disposed { get; private set; }

        public bool TryReplay(int startPosition)
        {
            if (startPosition >= fitsBelow)
            {
                return false;
            }
            Replays++;
            return true;
        }

        public void Dispose() => Disposed = true;
    }

    [Fact]
    public void A_step_is_recorded_once_and_replayed_until_it_no_longer_fits()
    {
        var made = new List<FakeStep>();
        int issued = 0;
        using var steps = new RecordedSteps<int>(issue =>
        {
            var step = new FakeStep(made.Count == 0 ? 12 : int.MaxValue);
            made.Add(step);
            return step;
        });
        for (int position = 10; position < 14; position++)
        {
            steps.Run(0, position, () => issued++);
        }
        // Recorded at 10 (the recording's own replay runs it), replayed at 11; at 12 it no longer fits: recorded again.
        Assert.Equal(2, made.Count);
        Assert.Equal(2, made[0].Replays);
        Assert.True(made[0].Disposed);
        Assert.Equal(2, made[1].Replays);
        Assert.False(made[1].Disposed);
        Assert.Equal(0, issued);                 // a recorder that records never needs the ops issued directly
    }

    [Fact]
    public void Keys_keep_their_own_recordings_and_a_new_stamp_records_again()
    {
        var made = new List<FakeStep>();
        using var steps = new RecordedSteps<(int Variant, int Position)>(issue =>
        {
            var step = new FakeStep(int.MaxValue);
            made.Add(step);
            return step;
        });
        // A session stamps its steps with its sampling options: a new but equal record is the same stamp.
        steps.Run((0, 5), 5, () => { }, stamp: new SamplingOptions(Temperature: 0.7f, Seed: 1));
        steps.Run((1, 5), 5, () => { }, stamp: new SamplingOptions(Temperature: 0.7f, Seed: 1));
        steps.Run((0, 5), 5, () => { }, stamp: new SamplingOptions(Temperature: 0.7f, Seed: 1));
        Assert.Equal(2, made.Count);
        steps.Run((0, 5), 5, () => { }, stamp: new SamplingOptions(Temperature: 0.9f, Seed: 1));
        Assert.Equal(3, made.Count);
        Assert.True(made[0].Disposed);
        Assert.False(made[1].Disposed);
        steps.Dispose();
        Assert.True(made.All(s => s.Disposed));
    }

    [Fact]
    public void Without_a_recorder_every_step_is_issued_directly()
    {
        int issued = 0, recordCalls = 0;
        using var steps = new RecordedSteps<int>(_ =>
        {
            recordCalls++;
            return null;
        });
        for (int position = 0; position < 5; position++)
        {
            steps.Run(0, position, () => issued++);
        }
        Assert.Equal(5, issued);
        Assert.Equal(1, recordCalls);            // asked once; the key then remembers nothing records
    }

    [Fact]
    public void A_recording_that_does_not_replay_where_it_was_made_is_an_internal_error()
    {
        using var steps = new RecordedSteps<int>(_ => new FakeStep(0));
        Assert.Throws<InvalidOperationException>(() => steps.Run(0, 3, () => { }));
    }
}
