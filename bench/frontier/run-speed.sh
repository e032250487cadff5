#!/usr/bin/env bash
# Issue 16 §3, the speed side of the frontier on the GPU: decode (and prefill) of the Llama-3.1-8B-shaped random model
# at the paper's shapes, 32k and 128k, batch 1, for every point of bench/frontier/run-evals.sh — Kascade with each
# frontier anchor count scaled from the embedded model's 24 layers to 32 (K = 3, 5, 8, 12, 16, 20, 24 → 4, 7, 11, 16,
# 21, 27, 32 anchors spread over the layers) and each baseline, at Top-k 10% and 20%, dense in every table.
# One `kascade bench generate` per budget and anchor count, its markdown table and JSON rows (what `kascade frontier`
# reads) in $FRONTIER/speed (default .frontier/speed). Tables already written are skipped, so the script can be run again after a time limit.
# Then: kascade frontier --model models/kascade-instrument-21m --evals .frontier --speeds .frontier/speed --out docs/results/frontier
# KNEE=K adds anchor refresh R = 4, 16, 64 at K's scaled anchor count and 10% (issue 16 §4).
# Usage: [CONTEXTS=32k,128k] [KNEE=K] bench/frontier/run-speed.sh [KASCADE_BINARY]   (from the repository root)
set -u
BIN=${1:-.gpu/kascade/kascade}
OUT=${FRONTIER:-.frontier}/speed
mkdir -p "$OUT"
COMMON="--random-config llama-3.1-8b --device cuda --contexts ${CONTEXTS:-32k,128k} --decode-tokens 32 --prefill-chunk 4096"
# One table: $1 its name, the rest bench generate's arguments; skipped when written.
table() {
  local f="$OUT/$1.md"; shift
  if [ ! -s "$f" ]; then
    if $BIN bench generate $COMMON "$@" --json "$OUT/$(basename "$f" .md).json" > "$f.part" 2> "$f.log"; then mv "$f.part" "$f"; fi
  fi
  echo "$(basename "$f" .md): $([ -s "$f" ] && echo done || echo "failed (see $f.log)")"
}
for p in 10 20; do
  for a in 4 7 11 16 21 27 32; do table "kascade-a$a-p$p" --topk-percent $p --anchors $a --attention dense,kascade; done
  # The oracle is a reference, not a method to deploy (its prefill ranks every query's keys on CUDA cores): left out.
  table "baselines-p$p" --topk-percent $p --attention dense,quest,omnikv,lessismore,sparcas,streamingllm
done
# Issue 16 §4: anchor refresh R at the frontier's knee (KNEE = the anchor count of 24 layers, as in run-evals.sh).
if [ -n "${KNEE:-}" ]; then
  a=$(( (KNEE * 32 + 12) / 24 ))
  for r in 4 16 64; do table "kascade-a$a-p10-r$r" --topk-percent 10 --anchors $a --anchor-refresh $r --attention dense,kascade; done
fi
