namespace Kascade.Testing;

/// <summary>Every numeric tolerance the tests use, each with the reason for its size (see docs/numerics.md).</summary>
public static class Tolerances
{
    /// <summary>fp32 kernels vs the double reference on O(1) values: a few hundred fp32 ulps of accumulated rounding over dot products of length ≤ 8k.</summary>
    public const double KernelAbsolute = 2e-4;

    /// <summary>Relative part for large values (logits, long dot products).</summary>
    public const double KernelRelative = 2e-4;

    /// <summary>Whole fp32 forward vs HF's fp32 forward on tiny random models: both fp32, different summation orders across 3 layers.</summary>
    public const double TinyModelLogits = 2e-3;

    /// <summary>Instrument model, our fp32 vs HF fp32 (24 layers, logits ~10–15): fp32 reordering grows through depth.</summary>
    public const double InstrumentFp32Logits = 2e-2;

    /// <summary>
    /// Instrument model, our fp32 vs HF bf16 (golden_hf.json): HF rounds every activation to bf16 (8 mantissa bits,
    /// ~0.4% per op) through 24 layers; observed differences are ~0.1–0.2 on logits of ~10, so 0.5 bounds them with margin.
    /// </summary>
    public const double InstrumentBf16Logits = 0.5;

    /// <summary>Two top-10 candidates whose HF bf16 logits differ by less than this may swap order (near-ties).</summary>
    public const double NearTie = 0.13;
}
