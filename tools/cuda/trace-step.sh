#!/bin/bash
# On the GPU machine (which has CUPTI but not nsys): builds tools/cuda/ktrace.c, a CUPTI LD_PRELOAD tracer, and runs
# a command under it; the trace (every kernel's GPU start and duration, CUDA-graph nodes included) goes to TRACE.csv
# and tools/cuda/step_trace.py prints where the second-to-last recorded decode step's time went.
# Usage: tools/cuda/trace-step.sh TRACE.csv COMMAND…   e.g. tools/cuda/trace-step.sh /tmp/k.csv .gpu/kascade bench
#        generate --random-config llama-3.1-8b --device cuda --contexts 131072 --decode-tokens 8 --attention kascade
set -euo pipefail
trace=$1; shift
here=$(dirname "$0")
include=$(dirname "$(find / -name cupti.h -path "*include*" 2>/dev/null | head -1)")
lib=$(dirname "$(find / -name "libcupti.so*" 2>/dev/null | grep -v stub | head -1)")
# The newest kernel activity record of this CUPTI (CUpti_ActivityKernel10 in CUDA 13).
record=$(grep -rhoE "\} CUpti_ActivityKernel[0-9]+;" "$include" | grep -oE "CUpti_ActivityKernel[0-9]+" | sort -V | tail -1)
gcc -O2 -shared -fPIC -DKERNEL_T="$record" -I"$include" -o /tmp/libktrace.so "$here/ktrace.c" -L"$lib" -lcupti -Wl,-rpath,"$lib"
KTRACE_OUT=$trace LD_PRELOAD=/tmp/libktrace.so "$@"
python3 "$here/step_trace.py" "$trace" "$(basename "$1")"
