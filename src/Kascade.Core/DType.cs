using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kascade.Core;

/// <summary>Element types a checkpoint may store. Compute is always fp32 on the CPU.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
}

public static class DTypes
{
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.F32 => 4,
        DType.F16 => 2,
        DType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Maps a safetensors dtype string ("BF16", "F16", "F32") to <see cref="DType"/>; null when unsupported.</summary>
    public static DType? FromSafeTensors(string name) => name switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        _ => null,
    };

    /// <summary>
    /// Widens <paramref name="source"/> (raw little-endian elements of <paramref name="dtype"/>, length
    /// <c>destination.Length * dtype.SizeOf()</c> bytes) to fp32. bf16 is the upper half of an fp32, so
    /// widening is a 16-bit shift; f16 goes through the BCL's vectorised conversion.
    /// </summary>
    public static void ToSingle(DType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (dtype)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(source)[..destination.Length].CopyTo(destination);
                break;
            case DType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source)[..destination.Length], destination);
                break;
            case DType.BF16:
                Bf16ToSingle(MemoryMarshal.Cast<byte, ushort>(source)[..destination.Length], destination);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>bf16 → fp32, exact. <paramref name="source"/>: bf16 bit patterns, same length as <paramref name="destination"/>.</summary>
    public static void Bf16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        var bits = MemoryMarshal.Cast<float, uint>(destination);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= source.Length; i += 16)
            {
                var v = Vector256.Create(source.Slice(i, 16));
                var (lo, hi) = Vector256.Widen(v);
                (lo << 16).CopyTo(bits.Slice(i, 8));
                (hi << 16).CopyTo(bits.Slice(i + 8, 8));
            }
        }
        for (; i < source.Length; i++)
        {
            bits[i] = (uint)source[i] << 16;
        }
    }

    /// <summary>The fp32 value a bf16 store keeps of <paramref name="value"/> (round to nearest even, then widen).</summary>
    public static float RoundToBf16(float value) => BitConverter.UInt32BitsToSingle((uint)SingleToBf16(value) << 16);

    /// <summary><see cref="RoundToBf16(float)"/> of each of <paramref name="source"/> into <paramref name="target"/> (the same length; may be the same span).</summary>
    public static void RoundToBf16(ReadOnlySpan<float> source, Span<float> target)
    {
        if (target.Length != source.Length)
        {
            throw new ArgumentException($"target holds {target.Length} values, source {source.Length}", nameof(target));
        }
        for (int i = 0; i < source.Length; i++)
        {
            target[i] = RoundToBf16(source[i]);
        }
    }

    /// <summary>fp32 → bf16 with round-to-nearest-even, the rounding PyTorch uses.</summary>
    public static ushort SingleToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return 0x7FC0;
        }
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
