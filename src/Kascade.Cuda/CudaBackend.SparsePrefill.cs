using Kascade.Core;
using Kascade.Cuda.Heuristics;
using Kascade.Cuda.Interop;
using Kascade.Cuda.Runtime;

namespace Kascade.Cuda;

/// <summary>
/// Sparse attention of a prefill chunk over a tile plan on tensor cores: a block per (tile, KV head) whose 32 · group
/// query rows share every gathered K/V tile, where <c>sparse_attention</c> gives each query row a warp that gathers its
/// keys alone — <c>sparse_prefill_wgmma</c> on Hopper (groups 2/4/8, head dims 64/128), else <c>sparse_prefill_mma</c>.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<(int HeadDim, int Group, bool Wgmma), SparsePrefillKernel> _sparsePrefillFunctions = [];

    /// <summary>A compiled sparse-prefill kernel: its function, name, threads per block, row blocks per tile (grid z) and dynamic shared memory.</summary>
    private readonly record struct SparsePrefillKernel(nint Function, string Name, int Threads, int RowBlocks, int SharedBytes);

    /// <summary>
    /// Runs <paramref name="parameters"/>' chunk through the tensor-core sparse prefill where it applies — a prefill chunk of
    /// a tile plan whose KV heads' query heads share a row, groups of 1 to 8, a tensor-core head dim; false where it does not.
    /// </summary>
    private bool TrySparsePrefill(AttentionArgs args, SparseParams parameters)
    {
        int group = args.Heads / args.KvHeads;
        if (!FastSelection || args.Tokens == 1 || parameters.TileUnits == 0 || parameters.GroupRows == 0 || group is not (1 or 2 or 4 or 8)
            || AttentionHeadDims.Family(args.HeadDim) != AttentionFamily.TensorCores)
        {
            return false;
        }
        var kernel = SparsePrefillFunction(args.HeadDim, group);
        LaunchWith(kernel.Function, kernel.Name, new Dim3((uint)Units(args), (uint)args.KvHeads, (uint)kernel.RowBlocks), (uint)kernel.Threads, (uint)kernel.SharedBytes, parameters);
        return true;
    }

    private SparsePrefillKernel SparsePrefillFunction(int headDim, int group)
    {
        bool wgmma = TileRunsWgmma(headDim, group, Hopper);
        if (!_sparsePrefillFunctions.TryGetValue((headDim, group, wgmma), out var entry))
        {
            var spec = wgmma ? TileKernels.SparseWgmma(group) : TileKernels.Mma(group);
            // wgmma: the swizzled K/V ring (the queries stay in registers); mma: the tile's queries and the K/V ring, rows
            // padded by 8 bf16 — AttentionKernel.SharedBytes's layouts of the dense kernels, whose loops these share.
            int shared = spec.SharedBytes(headDim);
            string name = wgmma ? "sparse_prefill_wgmma" : "sparse_prefill_mma";
            var function = Module(wgmma ? "sparse_prefill_wgmma.cu" : "sparse_prefill.cu", AttentionDefines(headDim, group, spec)).Function(name);
            entry = new SparsePrefillKernel(OptIn(function, name, shared), name, spec.Threads, TileKernels.RowBlocks(spec, group), shared);
            _sparsePrefillFunctions[(headDim, group, wgmma)] = entry;
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
