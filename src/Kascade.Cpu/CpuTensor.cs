using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>fp32 <c>[Rows, Cols]</c> rows of a managed array starting at <see cref="Offset"/>.</summary>
public sealed class CpuTensor : DeviceTensor
{
    internal CpuTensor(float[] data, int offset, int rows, int cols)
        : base(rows, cols)
    {
        Data = data;
        Offset = offset;
    }

    internal float[] Data { get; }

    internal int Offset { get; }

    public Span<float> Span => Data.AsSpan(Offset, Rows * Cols);

    public Span<float> Row(int row) => Data.AsSpan(Offset + row * Cols, Cols);

    public override DeviceTensor Take(int rows) => Slice(0, rows);

    public override DeviceTensor Slice(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, Rows);
        return new CpuTensor(Data, Offset + start * Cols, count, Cols);
    }

    public override void Dispose()
    {
    }
}

/// <summary>
/// A weight left where the checkpoint is memory-mapped (never copied whole into managed memory);
/// vectors (norm weights, biases) are widened to fp32 once because every token reads them.
/// </summary>
public sealed class CpuWeight : Weight
{
    private readonly bool _ownsMemory;

    internal CpuWeight(WeightSource source, bool ownsMemory = false)
        : base(source.Name, source.DType, source.Rows, source.Cols)
    {
        _ownsMemory = ownsMemory;
        Pointer = source.Pointer;
        if (source.Rows == 1)
        {
            Vector = new float[source.Cols];
            RowToSingle(0, Vector);
        }
    }

    internal nint Pointer { get; }

    /// <summary>The fp32 copy of a 1-row weight; null for matrices.</summary>
    internal float[]? Vector { get; }

    /// <summary>Row <paramref name="row"/> widened to fp32 into <paramref name="destination"/> (length Cols).</summary>
    internal unsafe void RowToSingle(int row, Span<float> destination)
    {
        int size = DType.SizeOf();
        var bytes = new ReadOnlySpan<byte>((byte*)Pointer + (long)row * Cols * size, Cols * size);
        DTypes.ToSingle(DType, bytes, destination);
    }

    /// <summary>Rows <c>[start, start + count)</c> widened to fp32 (row-major) into <paramref name="destination"/>.</summary>
    internal unsafe void RowsToSingle(int start, int count, Span<float> destination)
    {
        int size = DType.SizeOf();
        var bytes = new ReadOnlySpan<byte>((byte*)Pointer + (long)start * Cols * size, count * Cols * size);
        DTypes.ToSingle(DType, bytes, destination[..(count * Cols)]);
    }

    public override unsafe void Dispose()
    {
        if (_ownsMemory && Pointer != 0)
        {
            System.Runtime.InteropServices.NativeMemory.Free((void*)Pointer);
        }
    }
}

/// <summary>
/// fp32 cache. Keys <c>[KvHeads, Capacity, HeadDim]</c> so q·kᵀ reads rows; values stored transposed,
/// <c>[KvHeads, HeadDim, Capacity]</c>, so p·v is the same <c>A · Bᵀ</c> kernel.
/// </summary>
public sealed class CpuKvCache : KvCache
{
    internal CpuKvCache(KvCacheShape shape)
        : base(shape)
    {
        long perLayer = (long)shape.KvHeads * shape.Capacity * shape.HeadDim;
        if (perLayer > Array.MaxLength)
        {
            throw new KascadeException($"a KV cache of {shape.Capacity} positions × {shape.KvHeads} KV heads × {shape.HeadDim} is too large for the CPU backend");
        }
        Keys = new float[shape.Layers][];
        ValuesTransposed = new float[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            Keys[l] = new float[perLayer];
            ValuesTransposed[l] = new float[perLayer];
        }
    }

    internal float[][] Keys { get; }

    internal float[][] ValuesTransposed { get; }

    public override void Dispose()
    {
    }
}

/// <summary>A plan in host memory: <c>Indices[row · Capacity + i]</c> for i below <c>Counts[row]</c>.</summary>
public sealed class CpuKeyPlan(int units, int selectors, int capacity, PlanUnit unit) : KeyPlan(units, selectors, capacity, unit)
{
    private readonly int[] _indices = new int[checked(units * selectors * capacity)];
    private readonly int[] _counts = new int[units * selectors];

    /// <summary>The positions of <paramref name="row"/>, as the selector wrote them.</summary>
    public ReadOnlySpan<int> Row(int row) => _indices.AsSpan(row * Capacity, _counts[row]);

    /// <summary>Appends <paramref name="position"/> to <paramref name="row"/> (<see cref="IBackend.ExtendPlan"/>).</summary>
    internal void Append(int row, int position)
    {
        if (_counts[row] >= Capacity)
        {
            throw new InvalidOperationException($"row {row} of the plan is full ({Capacity} positions)");
        }
        _indices[row * Capacity + _counts[row]++] = position;
    }

    internal void Write(int row, int[] positions)
    {
        if (positions.Length > Capacity)
        {
            throw new InvalidOperationException($"{positions.Length} positions exceed the plan's capacity of {Capacity}");
        }
        positions.CopyTo(_indices.AsSpan(row * Capacity));
        _counts[row] = positions.Length;
    }

    /// <summary>
    /// Copies the rows of unit <paramref name="unit"/> to unit <paramref name="toUnit"/> of <paramref name="to"/> (a plan
    /// of as many selectors): a batch's plan unit to or from a single sequence's (<see cref="IBatchedDecode"/>).
    /// </summary>
    internal void CopyUnit(int unit, CpuKeyPlan to, int toUnit)
    {
        for (int selector = 0; selector < Selectors; selector++)
        {
            to.Write(toUnit * to.Selectors + selector, Row(unit * Selectors + selector).ToArray());
        }
    }

    public override void Dispose()
    {
    }
}
