#!/bin/bash
# Compiles every kernel source for a Hopper GPU (sm_90a) with tools/cuda/nvcc-local.sh's compiler — the tensor-core
# kernels over their specialisations, the rest at head dims 64 and 128 — and prints each entry point's registers,
# stack frame and spills, and any ptxas performance note (C75xx): a check of a kernel change before it goes to the GPU
# machine. Exit 1 on a compile error. Usage: tools/cuda/check-kernels.sh [kernels directory]
set -uo pipefail
nvcc=$(bash "$(dirname "$0")/nvcc-local.sh") || exit 1
kernels=${1:-src/Kascade.Cuda/Kernels}
failed=0
check() { # source, then its defines
  local source=$1; shift
  local log
  if ! log=$("$nvcc" -arch=sm_90a -std=c++17 "$@" -I "$kernels" --resource-usage -cubin -o /dev/null "$kernels/$source" 2>&1); then
    echo "FAILED $source $*"; echo "$log" | grep -m 10 error; failed=1; return
  fi
  echo "$log" | awk -v what="$source $*" '
    /Function properties for/ { name = $NF }
    /stack frame/ { frame = $1 " B stack, " $5 " B spilled" }
    /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "Used") regs = $(i + 1); print what ": " name ": " regs " registers, " frame }
    /\(C75[0-9][0-9]\)/ { sub(/.*\(C/, "(C"); print what ": note " substr($0, 1, 140) }'
}
# The specialisations AttentionKernel.For picks (Heuristics/AttentionLaunch.cs): Hopper prefill (PrefillWgmmaFor: 128-key
# tiles at head dim 128, 64 at 64), prefill elsewhere, decode.
wgmma() { echo "-DATT_WARPS=8 -DATT_M_TILES=1 -DATT_KEYS=$(($1 == 128 ? 128 : 64)) -DATT_STAGES=3 -DATT_WGMMA=1"; }
mma="-DATT_WARPS=4 -DATT_M_TILES=2 -DATT_KEYS=32 -DATT_STAGES=2"
decode="-DATT_WARPS=4 -DATT_M_TILES=1 -DATT_KEYS=32 -DATT_STAGES=2 -DATT_DECODE=1"
check ops.cu
check gemv.cu
check sampling.cu
for d in 64 128; do
  for source in selection.cu selectors.cu decode_selection.cu wide_topk.cu attention_combine.cu; do check $source -DHEAD_DIM=$d; done
  check attention_simple.cu -DHEAD_DIM=$d -DGROUP=4
  check attention_mma.cu -DHEAD_DIM=$d -DGROUP=4 $mma
  check attention_decode.cu -DHEAD_DIM=$d -DGROUP=4 $decode
  check decode_scores.cu -DHEAD_DIM=$d -DGROUP=4 $decode
done
for d in 64 128; do
  for g in 1 4; do check attention_wgmma.cu -DHEAD_DIM=$d -DGROUP=$g $(wgmma $d); done
  # The 32-query tile kernels' specialisations (Heuristics/TileKernels.cs).
  for g in 2 4 8; do
    check sparse_prefill_wgmma.cu -DHEAD_DIM=$d -DGROUP=$g -DATT_WARPS=$((g == 2 ? 4 : 8)) -DATT_M_TILES=1 -DATT_KEYS=64 -DATT_STAGES=3 -DATT_WGMMA=1
    check anchor_scores_wgmma.cu -DHEAD_DIM=$d -DGROUP=$g -DATT_WARPS=4 -DATT_M_TILES=1 -DATT_KEYS=64 -DATT_STAGES=2 -DATT_WGMMA=1
  done
  for g in 1 8; do
    check sparse_prefill.cu -DHEAD_DIM=$d -DGROUP=$g -DATT_WARPS=$g -DATT_M_TILES=2 -DATT_KEYS=64 -DATT_STAGES=2
    check anchor_prefill.cu -DHEAD_DIM=$d -DGROUP=$g -DATT_WARPS=$g -DATT_M_TILES=2 -DATT_KEYS=64 -DATT_STAGES=2
  done
done
exit $failed
