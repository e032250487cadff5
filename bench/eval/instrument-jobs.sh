#!/usr/bin/env bash
# The recorded evaluation of docs/results/eval-instrument (issue 5), cut into independent jobs so that the GPU
# machine's 16 CPU cores run them side by side: one job per (method, length, task) and one perplexity job per method
# at 8k, each with its own results directory under $EVAL (default .eval). Every job is `kascade eval` and resumes
# from its directory, so the script can be run again until all are done. Merge with bench/eval/merge.sh.
# Usage: [END=EPOCH_SECONDS] bench/eval/instrument-jobs.sh [KASCADE_BINARY]   (run from the repository root)
# Jobs still running at END are stopped (their finished samples are kept) and the rest are not started.
set -u
export END=${END:-$(( $(date +%s) + 86400 ))}
BIN=${1:-.gpu/kascade/kascade}
EVAL=${EVAL:-.eval}
mkdir -p "$EVAL"
METHODS=${METHODS:-"dense kascade kascade-pooled kascade-noremap oracle-topk streamingllm quest omnikv lessismore sparcas"}
COMMON="--model models/kascade-instrument-21m --haystack tests/data/haystack --samples 20 --seed 1 --device cpu"
{
  for m in $METHODS; do
    for l in 8k 4k 2k; do
      for t in passkey single; do
        threads=1; [ "$m" = oracle-topk ] && [ "$l" = 8k ] && threads=4
        echo "$m $l $t $threads"
      done
    done
    echo "$m 8k perplexity 1"
  done
} | xargs -P "${JOBS:-14}" -L 1 bash -c '
  m=$0 l=$1 t=$2 threads=$3
  if [ "$t" = perplexity ]; then what=(--tasks "" --perplexity tests/data/haystack); else what=(--tasks "$t"); fi
  left=$(( END - $(date +%s) ))
  [ $left -gt 5 ] || exit 0
  timeout $left '"$BIN"' eval '"$COMMON"' --attention $m --lengths $l "${what[@]}" --threads $threads --out '"$EVAL"'/$m-$l-$t > '"$EVAL"'/$m-$l-$t.log 2>&1
  echo "$m $l $t exit $?"'
