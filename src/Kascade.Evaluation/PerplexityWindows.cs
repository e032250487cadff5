using System.Numerics.Tensors;
using Kascade.Core;
using Kascade.Runtime;

namespace Kascade.Evaluation;

/// <summary>
/// Perplexity of a text at a context length: the text's tokens are cut into consecutive windows of that length;
/// in each, the first tokens are prefilled and the last <see cref="ScoredTokens"/> are fed one at a time as decode
/// steps (teacher forcing), each scored by the log-probability the model gave it. Scoring decode steps judges every
/// method on its sparse path, including the baselines that prefill densely.
/// </summary>
public sealed class PerplexityWindows
{
    private readonly int[] _tokens;

    /// <param name="source">A UTF-8 text file, or a directory whose .txt files are joined in name order.</param>
    /// <param name="lengths">Context lengths (window sizes) to measure at.</param>
    public PerplexityWindows(string source, Runtime.Tokenization.TextTokenizer tokenizer, IReadOnlyList<int> lengths, int scoredTokens, int windows)
    {
        Lengths = lengths.Count > 0 ? lengths : throw new KascadeException("perplexity needs at least one length");
        string text = Directory.Exists(source)
            ? string.Join("\n\n", Directory.GetFiles(source, "*.txt").Order(StringComparer.Ordinal).Select(File.ReadAllText))
            : File.Exists(source) ? File.ReadAllText(source) : throw new KascadeException($"perplexity text not found: {source}");
        _tokens = tokenizer.Encode(text, addSpecialTokens: false);
        ScoredTokens = scoredTokens > 0 ? scoredTokens : throw new KascadeException("--perplexity-tokens must be positive");
        Windows = windows > 0 ? windows : throw new KascadeException("--perplexity-windows must be positive");
        Source = source;
    }

    public string Source { get; }

    public IReadOnlyList<int> Lengths { get; }

    public int ScoredTokens { get; }

    public int Windows { get; }

    /// <summary>Window <paramref name="index"/> of <paramref name="length"/> consecutive tokens; the text must hold all the windows.</summary>
    public int[] Window(int length, int index)
    {
        if (length <= ScoredTokens)
        {
            throw new KascadeException($"a perplexity window of {length} tokens must be longer than the {ScoredTokens} scored tokens");
        }
        if ((long)length * Windows > _tokens.Length)
        {
            throw new KascadeException($"the perplexity text has {_tokens.Length} tokens, fewer than {Windows} windows of {length}");
        }
        return _tokens[(index * length)..((index + 1) * length)];
    }

    /// <summary>Σ −log p(token) over the last <see cref="ScoredTokens"/> tokens of <paramref name="window"/> under <paramref name="policy"/>.</summary>
    public double NegativeLogLikelihood(LlamaModel model, int[] window, AttentionPolicy policy, int prefillChunk)
    {
        int context = window.Length - ScoredTokens;
        var logits = new float[model.Config.VocabSize];
        using var session = model.CreateSession(window.Length, prefillChunk, policy);
        session.Prefill(window.AsSpan(0, context), logits);
        double nll = 0;
        for (int i = context; i < window.Length; i++)
        {
            nll -= LogProbability(logits, window[i]);
            if (i + 1 < window.Length)
            {
                session.Forward([window[i]], logits);
            }
        }
        return nll;
    }

    /// <summary>log softmax(<paramref name="logits"/>)[<paramref name="token"/>], in double.</summary>
    public static double LogProbability(ReadOnlySpan<float> logits, int token)
    {
        float max = TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (float l in logits)
        {
            sum += Math.Exp(l - max);
        }
        return logits[token] - max - Math.Log(sum);
    }
}
