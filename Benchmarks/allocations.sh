#!/usr/bin/env bash
# Heap allocations per PGD step once warm: one batch of 128 images, PGD with S and 2S steps, counted by
# malloc_count.so; (count(2S) - count(S)) / S is the allocations one step makes.
set -euo pipefail
cd "$(dirname "$0")/.."
gcc -O2 -shared -fPIC Benchmarks/malloc-count/malloc_count.c -o /tmp/malloc_count.so
swift build -c release --product advkit-bench >&2
bin="$(swift build -c release --show-bin-path)/advkit-bench"
S=${1:-10}
count() { LD_PRELOAD=/tmp/malloc_count.so "$bin" --threads "${THREADS:-2}" --n 128 --pgd-steps-only "$1" 2>&1 >/dev/null | sed -n 's/malloc-count: \([0-9]*\) allocations/\1/p'; }
a=$(count "$S"); b=$(count $((2 * S)))
echo "PGD on one batch of 128: $a allocations with $S steps, $b with $((2 * S)): $(( (b - a) / S )) per step"
