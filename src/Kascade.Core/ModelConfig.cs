namespace Kascade.Core;

/// <summary>The decoder families the forward pass knows; each differs only in the flags of <see cref="ModelConfig"/>.</summary>
public enum ModelArchitecture
{
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

/// <summary>Rotary embedding frequency scaling (HF <c>rope_scaling</c> / <c>rope_parameters</c>).</summary>
public enum RopeScalingType
{
    None,
    Linear,
    Llama3,
}

/// <summary>
/// RoPE parameters. <see cref="Factor"/> divides positions (linear) or low frequencies (llama3);
/// the llama3 fields follow Meta's Llama 3.1 reference: wavelengths longer than
/// <c>OriginalMaxPositions / LowFreqFactor</c> are divided by <see cref="Factor"/>, shorter than
/// <c>OriginalMaxPositions / HighFreqFactor</c> are kept, and the band between is interpolated.
/// </summary>
public sealed record RopeConfig(
    double Theta,
    RopeScalingType Scaling = RopeScalingType.None,
    double Factor = 1.0,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositions = 8192);

/// <summary>
/// One immutable view of a Llama-family <c>config.json</c>: RoPE + RMSNorm + SwiGLU + GQA decoders.
/// </summary>
public sealed record ModelConfig(
    ModelArchitecture Architecture,
    string ArchitectureName,
    int VocabSize,
    int HiddenSize,
    int IntermediateSize,
    int Layers,
    int Heads,
    int KvHeads,
    int HeadDim,
    int MaxPositions,
    double RmsNormEps,
    RopeConfig Rope,
    bool TieWordEmbeddings,
    bool AttentionBias,
    bool QkNorm,
    IReadOnlyList<int> EosTokenIds,
    int? BosTokenId,
    DType DType)
{
    /// <summary>Query heads per KV head (the GQA group size).</summary>
    public int Group => Heads / KvHeads;

    /// <summary>Softmax scale 1/sqrt(HeadDim).</summary>
    public float AttentionScale => 1f / MathF.Sqrt(HeadDim);

    public int QDim => Heads * HeadDim;

    public int KvDim => KvHeads * HeadDim;
}
