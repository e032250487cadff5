#!/usr/bin/env bash
# Issue 16 §3 and §5, the accuracy side of the frontier on the embedded model, on the GPU: `kascade eval` of Kascade with
# every anchor count of docs/results/frontier/schedules (K = 2–8, 12, 16, 20, 24 of 24 layers, written by one
# `kascade calibrate … --write-counts`; and the log objective's K = 2, 3, 5, 12, 16, 20 from `--objective log`, where it
# chooses other layers) at Top-k 10% and 20%, the knee's schedules with bf16 scores, the oracle and each baseline at the same two budgets,
# and dense: pass key, single needle and multikey at 2k/4k/8k, 20 prompts per cell, and perplexity at 8k with the
# windows of the recorded dense perplexity. One results directory per configuration under $FRONTIER (default
# .frontier), several `kascade eval` processes side by side (the 21M model leaves the GPU mostly idle). Every job
# resumes from its directory, so the script can be run again until all are done (e.g. over two 10-minute calls).
# Then: kascade frontier --model models/kascade-instrument-21m --evals .frontier --speeds .frontier/speed --out docs/results/frontier
# Usage: [END=EPOCH_SECONDS] [JOBS=6] bench/frontier/run-evals.sh [KASCADE_BINARY]   (from the repository root)
# KNEE="K …" adds anchor refresh R = 4, 16, 64 for each K-anchor schedule at 10% (issue 16 §4).
# DEVICE, TASKS, LENGTHS, SAMPLES and PERPLEXITY_LENGTHS override the recorded settings (a quick check on the CPU:
# DEVICE=cpu TASKS=passkey LENGTHS=600 SAMPLES=1 PERPLEXITY_LENGTHS=600).
set -u
export END=${END:-$(( $(date +%s) + 86400 ))}
BIN=${1:-.gpu/kascade/kascade}
FRONTIER=${FRONTIER:-.frontier}
SCHEDULES=docs/results/frontier/schedules
mkdir -p "$FRONTIER"
COMMON="--device ${DEVICE:-cuda} --model models/kascade-instrument-21m --tasks ${TASKS:-passkey,single,multikey} --haystack tests/data/haystack --lengths ${LENGTHS:-2k,4k,8k} --samples ${SAMPLES:-20} --seed 1 --perplexity tests/data/haystack --perplexity-lengths ${PERPLEXITY_LENGTHS:-8k}"
{
  echo "dense dense"
  for p in 10 20; do
    for k in 2 3 4 5 6 7 8 12 16 20 24; do echo "kascade-k$k-p$p kascade --schedule $SCHEDULES/instrument.k$k.json --topk-percent $p"; done
    # The log-objective DP's choices where they differ from the paper's among the counts above (K = 2, 3, 5, 12, 16,
    # 20; issue 16 §4, docs/kascade.md).
    for k in 2 3 5 12 16 20; do echo "kascade-log-k$k-p$p kascade --schedule $SCHEDULES/instrument-log.k$k.json --topk-percent $p"; done
    for m in oracle-topk quest omnikv lessismore sparcas; do echo "$m-p$p $m --topk-percent $p"; done
  done
  # Anchors scored with the queries' bf16 rounding (--score-precision bf16, the paper's kernels' numerics) at the
  # frontier's knee: does the one-MMA score keep the exact score's accuracy?
  echo "kascade-log-k5-p10-bf16 kascade --schedule $SCHEDULES/instrument-log.k5.json --topk-percent 10 --score-precision bf16"
  echo "kascade-k6-p10-bf16 kascade --schedule $SCHEDULES/instrument.k6.json --topk-percent 10 --score-precision bf16"
  # streamingllm's budget is its window.
  for w in 10 20 30; do echo "streamingllm-w$w streamingllm --baseline streaming-window-percent=$w"; done
  # Issue 16 §4: anchor refresh R at the frontier's knee (KNEE = anchor counts of the schedules, once it is known).
  for k in ${KNEE:-}; do
    for r in 4 16 64; do echo "kascade-k$k-p10-r$r kascade --schedule $SCHEDULES/instrument.k$k.json --topk-percent 10 --anchor-refresh $r"; done
  done
} | xargs -P "${JOBS:-6}" -L 1 bash -c '
  name=$0
  left=$(( END - $(date +%s) ))
  [ $left -gt 5 ] || exit 0
  timeout $left '"$BIN"' eval '"$COMMON"' --attention "$@" --out '"$FRONTIER"'/$name > '"$FRONTIER"'/$name.log 2>&1
  echo "$name: exit $?"'
