using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>The model produced a NaN or an infinite logit: a broken checkpoint or config, not a prompt to retry.</summary>
public sealed class NonFiniteLogitsException(string message) : KascadeException(message);

/// <summary>
/// Finds where non-finite numbers first appear in a forward pass: the tokens are run again through a fresh session
/// with an observer that reads every layer's input and attention output back to the host (slow, so only on request:
/// <see cref="LlamaModel.LocateNonFinite"/>, the CLI's <c>--verbose</c>). The cheap check that triggers it is the
/// sampling rule's (<see cref="Sampling.NonFinite"/>) or, for host logits, one pass over the row.
/// </summary>
public static class NonFiniteProbe
{
    /// <summary>
    /// Where the first non-finite value appears when <paramref name="tokens"/> run under <paramref name="policy"/>, as a
    /// phrase (<c>"layer 3's attention output, position 17"</c>). The probe's session has the failed session's
    /// <paramref name="capacity"/>, so the rotary tables the backend holds for it keep their size.
    /// </summary>
    public static string Locate(LlamaModel model, IReadOnlyList<int> tokens, AttentionPolicy policy, int maxChunk, int capacity)
    {
        var observer = new FirstNonFinite(model.Config.HiddenSize);
        using var session = model.CreateSession(capacity, maxChunk, policy, observer, probe: true);
        var ids = tokens.ToArray();
        var logits = new float[model.Config.VocabSize];
        try
        {
            for (int start = 0; start < ids.Length && observer.Found is null; start += session.MaxChunk)
            {
                session.Forward(ids.AsSpan(start, Math.Min(session.MaxChunk, ids.Length - start)), logits);
            }
        }
        catch (NonFiniteLogitsException)
        {
            // The logits of the chunk the observer flagged, or of one whose every layer input and attention output was finite.
            return observer.Found ?? $"layer {model.Config.Layers - 1}'s MLP output, the final norm or the LM head";
        }
        return observer.Found ?? "nowhere on a second run (the first run's values were not reproduced)";
    }

    /// <summary>Records the first layer whose input or attention output holds a NaN or an infinity.</summary>
    private sealed class FirstNonFinite(int hidden) : ILayerObserver
    {
        private float[] _rows = [];

        public string? Found { get; private set; }

        public void OnAttention(LayerObservation o)
        {
            if (Found is not null)
            {
                return;
            }
            if (FirstBadRow(o.Backend, o.Residual, o.Tokens) is { } input)
            {
                Found = o.Layer == 0
                    ? $"the token embeddings, position {o.StartPosition + input}"
                    : $"layer {o.Layer - 1}'s MLP output, position {o.StartPosition + input}";
            }
            else if (FirstBadRow(o.Backend, o.AttentionOutput, o.Tokens) is { } attention)
            {
                Found = $"layer {o.Layer}'s attention output, position {o.StartPosition + attention}";
            }
        }

        private int? FirstBadRow(IBackend backend, DeviceTensor x, int tokens)
        {
            if (_rows.Length < tokens * hidden)
            {
                _rows = new float[tokens * hidden];
            }
            var values = _rows.AsSpan(0, tokens * hidden);
            backend.Read(x.Take(tokens), values);
            for (int t = 0; t < tokens; t++)
            {
                foreach (float v in values.Slice(t * hidden, hidden))
                {
                    if (!float.IsFinite(v))
                    {
                        return t;
                    }
                }
            }
            return null;
        }
    }
}
