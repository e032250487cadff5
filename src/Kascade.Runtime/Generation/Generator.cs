using System.Diagnostics;
using Kascade.Core;
using Kascade.Runtime.Tokenization;

namespace Kascade.Runtime.Generation;

/// <summary>What ended a generation.</summary>
public enum StopReason
{
    /// <summary>The model produced an end-of-sequence token.</summary>
    EndOfSequence,

    /// <summary>A stop string appeared in the output (it is not included in the text).</summary>
    StopString,

    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> tokens were generated.</summary>
    MaxTokens,

    /// <summary>The model's context is full.</summary>
    ContextFull,
}

/// <summary>Options of one completion; immutable.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;

    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Strings that end the completion when they appear in its text.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Prefill runs the prompt in chunks of this many tokens (bounds activation memory).</summary>
    public int PrefillChunk { get; init; } = 512;

    /// <summary>Dense, Kascade (with its schedule) or a variant; see <see cref="AttentionPolicy"/>.</summary>
    public AttentionPolicy Attention { get; init; } = AttentionPolicy.Dense;
}

/// <summary>The completion and its counters. Decode tokens/s counts the forward passes after the first token, which prefill produces.</summary>
public sealed record GenerationResult(string Text, int PromptTokens, int GeneratedTokens, TimeSpan PrefillTime, TimeSpan DecodeTime, StopReason StopReason)
{
    public double PrefillTokensPerSecond => PromptTokens / PrefillTime.TotalSeconds;

    public double DecodeTokensPerSecond => GeneratedTokens > 1 ? (GeneratedTokens - 1) / DecodeTime.TotalSeconds : double.NaN;
}

/// <summary>Prompt → tokens → chunked prefill → sampled decode, streaming text as it is produced.</summary>
public sealed class Generator(LlamaModel model, TextTokenizer tokenizer)
{
    /// <summary>Tokenises <paramref name="prompt"/> with the tokenizer's own special-token template and runs the whole completion.</summary>
    /// <param name="onText">Receives each piece of completed text as soon as it is known not to start a stop string.</param>
    /// <param name="onPrefill">Receives (tokens done, prompt tokens) after each prefill chunk.</param>
    public GenerationResult Generate(string prompt, GenerationOptions options, Action<string>? onText = null, Action<int, int>? onPrefill = null)
    {
        using var completion = Prefill(Tokenize(prompt), options, onPrefill);
        return completion.Decode(onText);
    }

    public int[] Tokenize(string prompt) =>
        string.IsNullOrEmpty(prompt) ? throw new KascadeException("the prompt is empty") : tokenizer.Encode(prompt);

    /// <summary>Checks the prompt against the context and runs it through the model in chunks.</summary>
    public Completion Prefill(int[] promptIds, GenerationOptions options, Action<int, int>? onPrefill = null)
    {
        var config = model.Config;
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxNewTokens);
        if (promptIds.Length == 0)
        {
            throw new KascadeException("the prompt is empty");
        }
        if (promptIds.Length >= config.MaxPositions)
        {
            throw new KascadeException($"the prompt has {promptIds.Length} tokens; the model's context is {config.MaxPositions} (including generated tokens)");
        }
        int capacity = (int)Math.Min(config.MaxPositions, (long)promptIds.Length + Math.Max(options.MaxNewTokens, 1));
        var session = model.CreateSession(capacity, options.PrefillChunk, options.Attention);
        try
        {
            var clock = Stopwatch.StartNew();
            int first = session.Prefill(promptIds, options.Sampling, done => onPrefill?.Invoke(done, promptIds.Length));
            return new Completion(session, first, promptIds, clock.Elapsed, options, model.Config.EosTokenIds, tokenizer);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }
}

/// <summary>A prefilled sequence, ready to decode; owns its session.</summary>
public sealed class Completion : IDisposable
{
    private readonly InferenceSession _session;
    private readonly int _first;
    private readonly int[] _promptIds;
    private readonly TimeSpan _prefillTime;
    private readonly GenerationOptions _options;
    private readonly IReadOnlyList<int> _eos;
    private readonly TextTokenizer _tokenizer;

    internal Completion(InferenceSession session, int first, int[] promptIds, TimeSpan prefillTime, GenerationOptions options, IReadOnlyList<int> eos, TextTokenizer tokenizer)
    {
        _session = session;
        _first = first;
        _promptIds = promptIds;
        _prefillTime = prefillTime;
        _options = options;
        _eos = eos;
        _tokenizer = tokenizer;
    }

    /// <summary>
    /// Samples up to <see cref="GenerationOptions.MaxNewTokens"/> tokens (the first one prefill sampled), streaming text to
    /// <paramref name="onText"/>. Sampling runs on the backend; each step returns one token id to the host.
    /// </summary>
    public GenerationResult Decode(Action<string>? onText = null)
    {
        var clock = Stopwatch.StartNew();
        var decoder = _tokenizer.CreateStreamingDecoder(_promptIds);
        var text = new StopStringFilter(_options.Stop, onText);
        int generated = 0;
        StopReason reason = StopReason.MaxTokens;
        int token = _first;
        while (generated < _options.MaxNewTokens)
        {
            generated++;
            if (_eos.Contains(token))
            {
                reason = StopReason.EndOfSequence;
                break;
            }
            if (text.Append(decoder.Add(token)))
            {
                reason = StopReason.StopString;
                break;
            }
            if (generated == _options.MaxNewTokens)
            {
                break;
            }
            if (_session.Position == _session.Capacity)
            {
                reason = StopReason.ContextFull;
                break;
            }
            token = _session.Decode(_options.Sampling);
        }
        var decodeTime = clock.Elapsed;
        text.Flush();
        return new GenerationResult(text.Text, _promptIds.Length, generated, _prefillTime, decodeTime, reason);
    }

    public void Dispose() => _session.Dispose();

    /// <summary>
    /// Holds back only the tail of the text that could still grow into a stop string, so streamed output never
    /// contains (part of) a stop string that later completes.
    /// </summary>
    private sealed class StopStringFilter(IReadOnlyList<string> stops, Action<string>? onText)
    {
        private readonly System.Text.StringBuilder _text = new();
        private int _emitted;

        public string Text => _text.ToString();

        /// <summary>Adds <paramref name="piece"/>; true when a stop string is now complete (the text is cut before it).</summary>
        public bool Append(string piece)
        {
            _text.Append(piece);
            string all = _text.ToString();
            foreach (var stop in stops)
            {
                int at = all.IndexOf(stop, Math.Max(0, _emitted - stop.Length + 1), StringComparison.Ordinal);
                if (at >= 0)
                {
                    _text.Length = at;
                    Flush();
                    return true;
                }
            }
            int safe = all.Length - LongestStopPrefixSuffix(all);
            Emit(safe);
            return false;
        }

        public void Flush() => Emit(_text.Length);

        private void Emit(int upTo)
        {
            if (upTo > _emitted)
            {
                onText?.Invoke(_text.ToString(_emitted, upTo - _emitted));
                _emitted = upTo;
            }
        }

        private int LongestStopPrefixSuffix(string all)
        {
            int longest = 0;
            foreach (var stop in stops)
            {
                for (int len = Math.Min(stop.Length - 1, all.Length); len > longest; len--)
                {
                    if (all.AsSpan(all.Length - len).SequenceEqual(stop.AsSpan(0, len)))
                    {
                        longest = len;
                        break;
                    }
                }
            }
            return longest;
        }
    }
}
