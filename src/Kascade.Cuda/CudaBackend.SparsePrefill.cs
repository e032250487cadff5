using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// Sparse attention of a prefill chunk over a tile plan on tensor cores (<c>sparse_prefill_mma</c>): a block per (tile,
/// KV head) whose 32 · group query rows share every gathered K/V tile, where <c>sparse_attention</c> gives each query
/// row a warp that gathers its keys alone.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<(int HeadDim, int Group), (nint Function, int SharedBytes)> _sparsePrefillFunctions = [];

    /// <summary>
    /// Runs <paramref name="parameters"/>' chunk through <c>sparse_prefill_mma</c> where it applies — a prefill chunk of a
    /// tile plan whose KV heads' query heads share a row, groups of 1 to 8, a tensor-core head dim; false where it does not.
    /// </summary>
    private bool TrySparsePrefill(AttentionArgs args, SparseParams parameters)
    {
        int group = args.Heads / args.KvHeads;
        if (!FastSelection || args.Tokens == 1 || parameters.TileUnits == 0 || parameters.GroupRows == 0 || group is not (1 or 2 or 4 or 8)
            || AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            return false;
        }
        var (function, shared) = SparsePrefillFunction(args.HeadDim, group);
        LaunchWith(function, "sparse_prefill_mma", new Dim3((uint)Units(args), (uint)args.KvHeads, 1), (uint)(group * 32), (uint)shared, parameters);
        return true;
    }

    private (nint Function, int SharedBytes) SparsePrefillFunction(int headDim, int group)
    {
        if (!_sparsePrefillFunctions.TryGetValue((headDim, group), out var entry))
        {
            nint function = Module("sparse_prefill.cu", AttentionDefines(headDim, group)).Function("sparse_prefill_mma");
            // The queries (32 · group rows) and two (K, V) tiles of 64 keys, rows padded by 8 bf16 (TILE_STRIDE).
            int shared = (TopKBudget.TileSize * group + 2 * 2 * AnchorKeys) * (headDim + 8) * sizeof(ushort);
            entry = (OptIn(function, "sparse_prefill_mma", shared), shared);
            _sparsePrefillFunctions[(headDim, group)] = entry;
        }
        return entry;
    }

    /// <summary><paramref name="function"/> with <paramref name="sharedBytes"/> of dynamic shared memory opted in, or one clear error where the GPU has less.</summary>
    private nint OptIn(nint function, string name, int sharedBytes)
    {
        if (sharedBytes > _device.MaxSharedMemoryOptin)
        {
            throw new KascadeException($"{name} needs {sharedBytes} bytes of shared memory; {_device.Name} allows {_device.MaxSharedMemoryOptin}");
        }
        CudaCheck.ThrowIfFailed(Driver.cuFuncSetAttribute(function, CuFunctionAttribute.MaxDynamicSharedSizeBytes, sharedBytes), $"cuFuncSetAttribute({name})");
        return function;
    }
}
