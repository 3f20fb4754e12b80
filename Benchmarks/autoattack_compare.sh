#!/usr/bin/env bash
# Issue #14's speed criterion: AutoAttack "standard" in AdvKit against torchattacks 3.5.1's AutoAttack, on the
# reference CNN, the first 1,024 Fashion-MNIST test images, L-inf eps 0.1, 2 threads, seed 0, run in turn
# (torchattacks, then AdvKit) `repeats` times in the same session. Prints each pair's wall and CPU seconds and
# their ratios, the median ratio, AdvKit's seconds per component, and the robust accuracies.
#
#   PEERS=/path/to/peers Benchmarks/autoattack_compare.sh [repeats] [scratch-path]
#
# PEERS is a copy of ../shared/peers whose setup.sh has run (torch + torchattacks in $PEERS/.venv). A shared
# machine stretches wall time (torchattacks' thread pool far more than AdvKit's under load): quote a run whose
# load averages, printed per pair, are low, and the CPU-second ratio beside the wall one.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
scratch=${2:-}
out=${OUT:-bench-results}
mkdir -p "$out"
exec python3 scripts/crosscheck/autoattack.py --only autoattack --repeat "$repeats" \
    ${scratch:+--scratch-path "$scratch"} --out "$out/autoattack_compare.json"
