#!/usr/bin/env bash
# Issue 16 §3, the speed side of the frontier on the GPU: each method's decode attention over every layer of the
# Llama-3.1-8B shape (32 layers, 32/8 heads, head dim 128, bf16 cache; batch 1) at 32k and 128k, beside dense in the
# same run (`kascade bench methods`): the per-layer cost of each schedule's mix of dense, anchor and reuse layers.
# Kascade at every anchor count of bench/frontier/run-evals.sh scaled from the embedded model's 24 layers to 32
# (K = 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24 → 3, 4, 5, 7, 8, 9, 11, 16, 21, 27, 32 anchors spread over the layers), the
# oracle and each baseline at Top-k 10% and 20%, streamingllm at windows of 10, 20 and 30%, and the knee's bf16-score
# schedules (`--score-precision bf16`).
# One markdown table and its JSON rows (what `kascade frontier` reads) per call in $FRONTIER/speed (default
# .frontier/speed); tables already written are skipped, so the script can be run again after a time limit.
# Then: kascade frontier --model models/kascade-instrument-21m --evals .frontier --speeds .frontier/speed --out docs/results/frontier
# KNEE="K …" adds anchor refresh R = 4, 16, 64 at each K's scaled anchor count and 10% (issue 16 §4).
# BATCH=64 adds the same tables at batch 64 but the oracle's (`bench methods --batch`: every method but oracle-topk has
# batched decode ops; every layer attends over the batch's one cache, 34 GB at 128k), BATCH_RUNS timed cycles each
# (default 10), the knee's bf16-score schedules included; `kascade frontier --batch 64` then summarises that speed.
# Usage: [CONTEXTS=32k,128k] [KNEE="K …"] [BATCH=64] bench/frontier/run-speed.sh [KASCADE_BINARY]   (from the repository root)
set -u
BIN=${1:-.gpu/kascade/kascade}
OUT=${FRONTIER:-.frontier}/speed
mkdir -p "$OUT"
COMMON="--config llama-3.1-8b --device cuda --contexts ${CONTEXTS:-32k,128k}"
# An anchor count of the 24-layer embedded model scaled to the 32 layers timed.
scaled() { echo $(( ($1 * 32 + 12) / 24 )); }
# One table: $1 its name, the rest bench methods' arguments; skipped when written.
table() {
  local f="$OUT/$1.md"; shift
  if [ ! -s "$f" ]; then
    if $BIN bench methods $COMMON "$@" --json "$OUT/$(basename "$f" .md).json" > "$f.part" 2> "$f.log"; then mv "$f.part" "$f"; fi
  fi
  echo "$(basename "$f" .md): $([ -s "$f" ] && echo done || echo "failed (see $f.log)")"
}
anchors=$(for k in 2 3 4 5 6 7 8 12 16 20 24; do scaled $k; done | paste -sd,)
table methods --attention kascade,oracle-topk,quest,omnikv,lessismore,sparcas --topk-percent 10,20 --anchors "$anchors"
for w in 10 20 30; do table "streamingllm-w$w" --attention streamingllm --baseline streaming-window-percent=$w; done
# The knee's bf16-score points of run-evals.sh (K = 5 and 6 of 24 layers: 7 and 8 of 32): layer 0 then scores apart
# from its dense pass, so they are timed, not assumed equal to the exact ones.
table methods-bf16 --attention kascade --topk-percent 10 --anchors "$(scaled 5),$(scaled 6)" --score-precision bf16
if [ -n "${KNEE:-}" ]; then
  knee=$(for k in $KNEE; do scaled $k; done | paste -sd,)
  table "refresh-a${knee//,/-}" --attention kascade --topk-percent 10 --anchors "$knee" --anchor-refresh 4,16,64
fi
if [ -n "${BATCH:-}" ]; then
  table "methods-b$BATCH" --attention kascade,quest,omnikv,lessismore,sparcas --topk-percent 10,20 --anchors "$anchors" --batch "$BATCH" --runs "${BATCH_RUNS:-10}"
  for w in 10 20 30; do table "streamingllm-w$w-b$BATCH" --attention streamingllm --baseline streaming-window-percent=$w --batch "$BATCH" --runs "${BATCH_RUNS:-10}"; done
  table "methods-bf16-b$BATCH" --attention kascade --topk-percent 10 --anchors "$(scaled 5),$(scaled 6)" --score-precision bf16 --batch "$BATCH" --runs "${BATCH_RUNS:-10}"
fi
